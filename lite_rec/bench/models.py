"""What the benchmark runs: every model and ablation by name, each trained on the same data
and wrapped so that `run.py` can time and score it the same way."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from lite_rec.baselines.bert4rec import train_bert4rec
from lite_rec.baselines.generative import GenerativeConfig, beam_ranks, train_generative
from lite_rec.baselines.sasrec_bce import train_sasrec_bce
from lite_rec.config import Config
from lite_rec.evaluate import evaluate, recommend
from lite_rec.item_embeddings import item_text
from lite_rec.metrics import ranking_metrics
from lite_rec.recipe import resolve_config
from lite_rec.sequences import SequenceData
from lite_rec.train import train

log = logging.getLogger(__name__)

MODELS = {
    "lite_llm4rec": "Lite-LLM4Rec as configured (params.yaml: text+id items, traversal "
    "training, projection head)",
    "lite_id": "ablation: id only (no Item LLM) = SASRec with cross-entropy",
    "lite_text": "ablation: text only (no id embedding)",
    "lite_random_item_llm": "ablation: text+id from the Item LLM architecture, random weights",
    "lite_sampling": "ablation: one sampled prefix per user per epoch instead of traversal",
    "lite_finetuned_item_llm": "ablation: the Item LLM's last layer fine-tuned jointly instead "
    "of frozen",
    "sasrec_bce": "SASRec, original BCE loss with one negative per position",
    "bert4rec": "BERT4Rec, bidirectional, masked-item training",
    "generative_sequential": "generative T5, beam search over P5 sequential ids",
    "generative_semantic": "generative T5, beam search over semantic ids (hierarchical k-means)",
    "generative_text": "generative T5 reading a P5-style text prompt (each history item's id "
    "tokens and title/genre word pieces), beam search over sequential ids",
    "generative_head": "ablation: generative_sequential's T5 encoder with a projection head "
    "instead of the decoder and beam search",
}
NOT_RUN = {
    "lite_beam_decoding": "beam search on the Recommendation LLM's encoder: it has no decoder "
    "over item-id tokens; the same-encoder head-vs-beam comparison is generative_head vs "
    "generative_sequential",
}
REFERENCE = "lite_llm4rec"
BEAM_MODELS = ("generative_sequential", "generative_semantic", "generative_text")
SAME_ENCODER = {"generative_head": "generative_sequential"}  # head model: its beam twin
METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
TIMED_KS = (10, 20)
TIMING_REPEATS = 3
LATENCY_USERS = 300  # single-user requests timed for the latency percentiles


@dataclass
class BenchData:
    """What every model of one dataset shares."""

    name: str
    data: SequenceData
    embeddings: np.ndarray | None  # pretrained Item LLM vectors, one row per item
    random_embeddings: np.ndarray | None  # the same architecture with random weights
    config: Config
    generative: GenerativeConfig
    work_dir: Path
    cache_dir: Path


@dataclass
class ModelRun:
    model: nn.Module
    best_epoch: int
    history: list[dict[str, Any]]
    recommend: Callable[[list[np.ndarray], int], np.ndarray]  # -> (B, k) item indices
    test_metrics: Callable[[np.ndarray], dict[str, float]]  # from the timed top-20 lists
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra columns of its row


def _projection_run(
    model: nn.Module, bench: BenchData, best_epoch: int, history, details: dict | None = None
) -> ModelRun:
    """A model with `score()`: exact full-ranking test metrics."""
    batch = bench.config.train.eval_batch_size
    return ModelRun(
        model,
        best_epoch,
        history,
        lambda histories, k: recommend(model, histories, k, batch_size=batch)[0],
        lambda _top: evaluate(model, bench.data, "test", batch),
        details or {},
    )


def _lite(bench: BenchData, name: str, model_changes: dict, train_changes: dict) -> ModelRun:
    """Lite-LLM4Rec as configured (`train.recipe` resolved on the data) with one switch
    changed: each ablation differs from `lite_llm4rec` in it alone."""
    config = resolve_config(bench.config, bench.data)
    model_config = dataclasses.replace(config.model, **model_changes)
    train_config = dataclasses.replace(config.train, **train_changes)
    embeddings = bench.random_embeddings if name == "lite_random_item_llm" else bench.embeddings
    if model_config.item_repr == "id":
        embeddings = None
    result = train(
        bench.data,
        embeddings,
        model_config,
        train_config,
        bench.work_dir / name,
        resume=False,
        progress=False,
        item_llm=config.item_llm,
    )
    details = {"recipe": train_config.recipe, "refit_epochs": len(result.refit_history)}
    return _projection_run(result.model, bench, result.best_epoch, result.history, details)


def _generative(
    bench: BenchData, scheme: str, decoding: str = "beam", prompt: str = "ids"
) -> ModelRun:
    item_llm = bench.config.item_llm
    config = dataclasses.replace(
        bench.generative,
        id_scheme=scheme,
        decoding=decoding,
        prompt=prompt,
        tokenizer=item_llm.model,
    )
    texts = item_text(bench.data.items, item_llm.template) if prompt == "text" else None
    result = train_generative(
        bench.data, config, bench.config.train, bench.embeddings, log=log.info, texts=texts
    )
    if decoding == "head":
        return _fitted(result, bench)
    histories, targets = bench.data.histories_and_targets("test")
    return ModelRun(
        result.model,
        result.best_epoch,
        result.history,
        lambda users, k: result.model.recommend(users, k)[0],
        lambda top: ranking_metrics(beam_ranks(top, histories, targets, bench.data.n_items)),
    )


def _fitted(result, bench: BenchData) -> ModelRun:
    return _projection_run(result.model, bench, result.best_epoch, result.history)


TRAINERS: dict[str, Callable[[BenchData], ModelRun]] = {
    "lite_llm4rec": lambda b: _lite(b, "lite_llm4rec", {}, {}),
    "lite_id": lambda b: _lite(b, "lite_id", {"item_repr": "id"}, {}),
    "lite_text": lambda b: _lite(b, "lite_text", {"item_repr": "text"}, {}),
    "lite_random_item_llm": lambda b: _lite(b, "lite_random_item_llm", {}, {}),
    "lite_sampling": lambda b: _lite(b, "lite_sampling", {}, {"strategy": "sampling"}),
    "lite_finetuned_item_llm": lambda b: _lite(
        b, "lite_finetuned_item_llm", {"finetune_item_llm": True}, {}
    ),
    "sasrec_bce": lambda b: _fitted(
        train_sasrec_bce(b.data, b.config.model, b.config.train, log.info), b
    ),
    "bert4rec": lambda b: _fitted(
        train_bert4rec(b.data, b.config.model, b.config.train, log=log.info), b
    ),
    "generative_sequential": lambda b: _generative(b, "sequential"),
    "generative_semantic": lambda b: _generative(b, "semantic"),
    "generative_text": lambda b: _generative(b, "sequential", prompt="text"),
    "generative_head": lambda b: _generative(b, "sequential", "head"),
}
