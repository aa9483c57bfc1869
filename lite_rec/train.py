"""Training the Recommendation LLM (Lite-LLM4Rec): build the model, attach the Item LLM's
trainable layers when fine-tuning, train it with `lite_rec.trainer.Trainer` (early stopping on
validation NDCG@10, a checkpoint every epoch from which a crashed run resumes to bit-identical
weights on CPU, the refit epochs) and save it with `lite_rec.model_io`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lite_rec import distributed
from lite_rec.config import ItemLLMConfig, ModelConfig, TrainConfig
from lite_rec.evaluate import evaluate
from lite_rec.item_embeddings import ItemEncoder, item_text
from lite_rec.item_tower import ItemTower
from lite_rec.model import RecommendationLLM
from lite_rec.model_io import save_model
from lite_rec.nn.sampled_softmax import NEGATIVES, NegativeSampler, item_counts
from lite_rec.sequences import SequenceData, epoch_batches
from lite_rec.trainer import Batch, Trainer, TrainResult, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def negative_sampler(
    config: TrainConfig, n_items: int, sequences: list[np.ndarray] | None = None
) -> NegativeSampler | None:
    """How `train.loss=sampled` draws its candidates (`train.num_negatives` of
    `train.negatives`, and `train.in_batch_negatives`); None for the full loss. Popularity
    counts each item's occurrences in the training `sequences`."""
    if config.loss != "sampled":
        return None
    if config.negatives not in NEGATIVES:
        raise ValueError(f"train.negatives: expected one of {NEGATIVES}, got {config.negatives!r}")
    counts = None
    if config.negatives == "popularity":
        if sequences is None:
            raise ValueError("train.negatives=popularity needs the training sequences' counts")
        counts = item_counts(sequences, n_items)
    return NegativeSampler(
        n_items, config.num_negatives, counts, config.popularity_alpha, config.in_batch_negatives
    )


def training_loss(
    model: RecommendationLLM,
    batch: Batch,
    config: TrainConfig,
    sampler: NegativeSampler | None = None,
) -> torch.Tensor:
    """The batch's loss as `train.loss` and `train.label_smoothing` say, the sampled loss's
    candidates drawn by `sampler` (`negative_sampler`; None: built from `config` alone, which
    popularity negatives cannot be)."""
    if sampler is None:
        sampler = negative_sampler(config, model.n_items)
    return model.loss(batch, 0, config.label_smoothing, config.loss_chunk_logits, sampler=sampler)


def _attach_item_llm(
    model: RecommendationLLM, data: SequenceData, item_llm: ItemLLMConfig | None
) -> None:
    """With `model.finetune_item_llm`, give the model the Item LLM's trainable last layers."""
    config = model.config
    if not config.finetune_item_llm:
        return
    if item_llm is None:
        raise ValueError("model.finetune_item_llm=true: train() needs the item_llm config")
    encoder = ItemEncoder(item_llm.model, item_llm.pooling, item_llm.max_length, item_llm.normalize)
    tower = ItemTower(
        encoder.to(model.device),
        item_text(data.items, item_llm.template),
        config.finetune_layers,
        config.finetune_items_per_step,
        item_llm.batch_size,
    )
    model.items.attach_tower(tower)


def set_sparse_id_gradients(model: RecommendationLLM, config: TrainConfig) -> None:
    """With `train.sparse_id_gradients`, the ID embedding's gradient holds the rows a step
    touched alone (a sparse tensor), which only the sampled loss can give: the full loss
    reads the whole table."""
    if not config.sparse_id_gradients:
        return
    if config.loss != "sampled":
        raise ValueError(
            f"train.sparse_id_gradients needs train.loss=sampled (got {config.loss!r}): the "
            "full loss reads every row of the ID embedding"
        )
    if model.items.use_id:
        model.items.id_embedding.sparse = True


def check_data_parallel(model_config: ModelConfig, config: TrainConfig, ranks: int) -> None:
    """Refuse, by name, what training in `ranks` data-parallel processes does not support:
    sparse ID gradients (nccl reduces dense tensors alone, and DDP would have to gather the
    rows each rank touched) and a fine-tuned Item LLM (its layers step on a sample of items
    of their own)."""
    if ranks == 1:
        return
    if config.sparse_id_gradients:
        raise ValueError(
            f"train.sparse_id_gradients=true: not supported with {ranks} data-parallel "
            "processes (train.nproc); expected train.sparse_id_gradients=false (dense) or "
            "train.nproc=1"
        )
    if model_config.finetune_item_llm:
        raise ValueError(
            f"model.finetune_item_llm=true: not supported with {ranks} data-parallel "
            "processes (train.nproc); expected model.finetune_item_llm=false or train.nproc=1"
        )


def parameter_groups(model: RecommendationLLM, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the fine-tuned Item LLM layers, if any, at their own (smaller)
    learning rate `train.item_llm_lr`, an ID embedding with sparse gradients
    (`set_sparse_id_gradients`) marked `sparse` (for SparseAdam), everything else at
    `train.lr`."""
    tower = model.items.tower
    item_llm = [p for p in tower.parameters() if p.requires_grad] if tower is not None else []
    sparse = [model.items.id_embedding.weight] if model.items.use_id else []
    sparse = sparse if sparse and model.items.id_embedding.sparse else []
    apart = {id(p) for p in item_llm + sparse}
    groups = [{"params": [p for p in model.parameters() if id(p) not in apart]}]
    if item_llm:
        groups.append({"params": item_llm, "lr": config.item_llm_lr})
    if sparse:
        groups.append({"params": sparse, "sparse": True})
    return groups


def train(
    data: SequenceData,
    text_embeddings: np.ndarray | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    item_llm: ItemLLMConfig | None = None,
) -> TrainResult:
    """Train, keep the best epoch by validation NDCG@10, and write `out_dir/model.pt` +
    `model_config.json`. `out_dir/checkpoint.pt` is rewritten after every epoch; with
    `resume`, a run picks up from it. `on_epoch_end(history_row)` runs after each checkpoint.
    `item_llm` (the Item LLM's config) is needed only with `model.finetune_item_llm`.
    The configs are used as given: `train.recipe` was applied when they were resolved
    (`lite_rec.recipe.resolve_config`).

    In a torch.distributed process group (`lite_rec.distributed`) every rank calls this alike:
    each trains on its part of every batch and validates its share of the users, and rank 0
    alone logs, calls `on_epoch_end` and writes `out_dir`. The sampled loss's negatives are
    drawn in shares, each rank's from a stream seeded by (seed, rank), and gathered, so every
    rank scores its part of the batch against the same `train.num_negatives` items, as one
    process scores the whole batch (dropout masks differ by rank the way the shares do)."""
    out_dir = Path(out_dir)
    check_data_parallel(model_config, train_config, distributed.world_size())
    if train_config.threads > 0:
        torch.set_num_threads(train_config.threads)
    seed_everything(train_config.seed)
    model = RecommendationLLM(model_config, data.n_items, text_embeddings).to(train_config.device)
    _attach_item_llm(model, data, item_llm)
    set_sparse_id_gradients(model, train_config)
    rank, ranks, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    if rank > 0:  # the same initial weights, then a stream of the rank's own
        seed_everything(train_config.seed + rank)
    train_sequences, refit_sequences = data.train_sequences(), data.refit_sequences()
    max_len = model_config.max_len
    sampler = negative_sampler(train_config, data.n_items, train_sequences)
    batch_size = train_config.eval_batch_size
    # One process keeps `evaluate` itself: its means, not sums divided back.
    validate = distributed.evaluate_across_ranks if ranks > 1 else evaluate
    # Without bars (benchmarks, Dagster) the log still shows the run moving.
    epoch_log = tqdm.write if progress else functools.partial(log.info, "%s: %s", out_dir.name)
    trainer = Trainer(
        model,
        lambda epoch: epoch_batches(train_sequences, train_config, max_len, epoch, rank, ranks),
        functools.partial(training_loss, config=train_config, sampler=sampler),
        lambda m: validate(m, data, "valid", batch_size),
        train_config,
        refit_batches=lambda epoch: epoch_batches(
            refit_sequences, train_config, max_len, epoch, rank, ranks
        ),
        parameter_groups=parameter_groups(model, train_config),
        checkpoint=out_dir / CHECKPOINT_FILE,
        refresh=model.items.refresh,
        log=epoch_log if main else None,
        progress=progress and main,
        on_epoch_end=on_epoch_end if main else None,
    )
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = trainer.fit(resume)
    # Fine-tuned Item LLM layers are not saved: the text table they produced is, so the model
    # is what load_model gives.
    model.items.tower = None
    if main:
        save_model(model, out_dir, len(result.refit_history))
    return result
