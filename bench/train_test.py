"""What `bench_model.py` and `sweep.py` share: train one config from scratch, time it, and
score the trained model (the best epoch, then any refit epochs) on the test split."""

import time
from pathlib import Path

import numpy as np

from lite_rec.config import Config
from lite_rec.evaluate import evaluate
from lite_rec.sequences import SequenceData
from lite_rec.train import TrainResult, train


def train_and_test(
    data: SequenceData, embeddings: np.ndarray | None, config: Config, out_dir: Path
) -> tuple[TrainResult, float, dict[str, float]]:
    """-> (the training result, its wall seconds, test metrics)"""
    start = time.perf_counter()
    result = train(
        data,
        embeddings,
        config.model,
        config.train,
        out_dir,
        resume=False,
        progress=False,
        item_llm=config.item_llm,
    )
    seconds = time.perf_counter() - start
    return result, seconds, evaluate(result.model, data, "test", config.train.eval_batch_size)


def refit_note(row: dict) -> str:
    """' + N refit' for a run with train.refit_epochs, after its 'epochs (best)' (rows of runs
    from before the key have none)."""
    return f" + {row['refit_epochs']} refit" if row.get("refit_epochs") else ""
