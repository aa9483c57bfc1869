"""Training the Recommendation LLM: next-item prediction, early stopping on validation NDCG@10,
and a checkpoint every epoch from which a crashed run resumes to bit-identical weights (CPU)."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lite_rec.config import ItemLLMConfig, ModelConfig, TrainConfig, saved_section
from lite_rec.evaluate import evaluate
from lite_rec.item_embeddings import ItemEncoder, item_text
from lite_rec.item_tower import ItemTower
from lite_rec.model import RecommendationLLM
from lite_rec.model_io import atomic_save, save_model
from lite_rec.recipe import apply_recipe
from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
SELECTION_METRIC = "ndcg@10"
# Train-config fields a resumed run may change without changing the result it converges to.
# (`refit_epochs` acts after early stopping: a stopped run resumed with more refit epochs ends
# where a fresh run with them would.)
RESUMABLE_CHANGES = {"epochs", "patience", "threads", "eval_batch_size", "device", "refit_epochs"}


@dataclass
class TrainResult:
    model: RecommendationLLM  # holding the best epoch's weights
    best_epoch: int  # 1-based
    history: list[dict[str, Any]]  # per epoch: epoch, loss, lr, valid metrics, seconds
    train_config: TrainConfig  # as the run used it: train.recipe resolved (model.config too)
    # per refit epoch (train.refit_epochs): epoch (numbered on), refit_epoch, loss, lr, seconds
    refit_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def traversal_windows(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """Every position of every sequence as a target: each sequence is cut, from its end, into
    windows of max_len + 1 items (inputs + shifted targets) that share one boundary item, so
    each target appears exactly once. -> (n_windows, max_len + 1) internal indices, right-padded."""
    windows = []
    for sequence in sequences:
        for end in range(len(sequence), 1, -max_len):
            windows.append(sequence[max(0, end - max_len - 1) : end] + 1)
    padded = np.zeros((len(windows), max_len + 1), dtype=np.int64)
    for row, window in enumerate(windows):
        padded[row, : len(window)] = window
    return padded


def sampled_prefixes(
    sequences: list[np.ndarray], max_len: int, rng: np.random.Generator
) -> np.ndarray:
    """One random prefix -> next item per sequence; only the last input position has a target
    (`target_ids` is built so). -> (n_users, max_len + 1) internal indices, right-padded."""
    usable = [s for s in sequences if len(s) >= 2]
    padded = np.zeros((len(usable), max_len + 1), dtype=np.int64)
    for row, sequence in enumerate(usable):
        target = int(rng.integers(1, len(sequence)))
        window = sequence[max(0, target - max_len) : target + 1] + 1
        padded[row, : len(window)] = window
    return padded


def make_batch(windows: np.ndarray, last_target_only: bool) -> dict[str, torch.Tensor]:
    """(B, max_len + 1) windows -> input_ids, target_ids (B, T), trimmed to the longest row."""
    lengths = (windows > 0).sum(1)  # (B,)
    width = int(lengths.max())
    input_ids = windows[:, : width - 1]  # (B, T)
    target_ids = windows[:, 1:width].copy()  # (B, T)
    if last_target_only:
        keep = np.zeros_like(target_ids, dtype=bool)
        keep[np.arange(len(windows)), lengths - 2] = True
        target_ids[~keep] = 0
    return {"input_ids": torch.from_numpy(input_ids), "target_ids": torch.from_numpy(target_ids)}


def epoch_windows(
    sequences: list[np.ndarray], config: TrainConfig, max_len: int, epoch: int
) -> np.ndarray:
    """The epoch's training windows in batch order, derived from (seed, epoch) alone.

    Windows are sorted by length (random order within a length) and cut into batches, and the
    batches are shuffled: each batch is then padded to about its own length, which makes the
    transformer ~7x cheaper on short-history data such as Amazon than random batches."""
    rng = np.random.default_rng([config.seed, epoch])
    if config.strategy == "traversal":
        windows = traversal_windows(sequences, max_len)
    elif config.strategy == "sampling":
        windows = sampled_prefixes(sequences, max_len, rng)
    else:
        raise ValueError(f"train.strategy: expected traversal or sampling, got {config.strategy!r}")
    lengths = (windows > 0).sum(1)
    by_length = np.lexsort((rng.random(len(windows)), lengths))
    batches = [
        by_length[start : start + config.batch_size]
        for start in range(0, len(windows), config.batch_size)
    ]
    order = np.concatenate([batches[b] for b in rng.permutation(len(batches))])
    return windows[order]


def warmup_schedule(warmup_steps: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def check_train_config(config: TrainConfig) -> None:
    """Reject, by name, the loss and schedule settings that have no meaning."""
    if config.loss not in {"ce", "sampled"}:
        raise ValueError(f"train.loss: expected ce or sampled, got {config.loss!r}")
    if not 0.0 < config.lr_decay <= 1.0 or config.lr_decay_patience < 1:
        raise ValueError(
            "train.lr_decay must be in (0, 1] and train.lr_decay_patience >= 1, got "
            f"{config.lr_decay} and {config.lr_decay_patience}"
        )
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"train.label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.min_delta < 0.0:
        raise ValueError(f"train.min_delta must be >= 0, got {config.min_delta}")
    if config.refit_epochs < 0 or (config.refit_epochs > 0 and config.epochs < 1):
        raise ValueError(
            "train.refit_epochs must be >= 0 and needs train.epochs >= 1 (it continues from "
            f"the best epoch), got {config.refit_epochs} and {config.epochs}"
        )


def decay_on_plateau(scheduler, bad_epochs: int, config: TrainConfig) -> None:
    """After an epoch that leaves `bad_epochs` epochs without a better validation score,
    multiply the rates by `lr_decay` at every `lr_decay_patience`-th such epoch. LambdaLR sets
    each step's rate to base rate x warmup factor, and its state (saved with the checkpoint)
    holds the base rates, so the decay lives there."""
    if bad_epochs > 0 and bad_epochs % config.lr_decay_patience == 0:
        scheduler.base_lrs = [rate * config.lr_decay for rate in scheduler.base_lrs]


def is_better(score: float, best: float, config: TrainConfig) -> bool:
    """Whether a validation score beats the best so far by more than `min_delta`."""
    return score > best + config.min_delta


def _record_epoch(
    state: dict[str, Any], row: dict[str, Any], model: RecommendationLLM, config: TrainConfig
) -> None:
    """Append the epoch to the history, keep the best weights, decide on early stopping."""
    state["history"].append(row)
    state["epoch"] = row["epoch"]
    score = row[f"valid_{SELECTION_METRIC}"]
    if is_better(score, state["best_score"], config):
        state.update(best_epoch=row["epoch"], best_score=score, bad_epochs=0)
        state["best_weights"] = {k: v.clone() for k, v in model.state_dict().items()}
    else:
        state["bad_epochs"] += 1
    state["finished"] = state["bad_epochs"] >= config.patience


def _save_checkpoint(path: Path, model, optimizer, scheduler, state, config: TrainConfig) -> None:
    """Everything the next epoch depends on, RNG states included, written atomically."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "state": state,
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(config),
    }
    atomic_save(checkpoint, path)


def _restore_checkpoint(path: Path, model, optimizer, scheduler, config: TrainConfig) -> dict:
    """Load what `_save_checkpoint` wrote into the fresh objects; returns the run state."""
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    wanted = {"model": model.config, "train": config}
    changed = []
    for section, current in wanted.items():
        # A key the checkpoint lacks is newer than the run: it behaved as before the key.
        then = saved_section(section, checkpoint[f"{section}_config"], type(current)())
        changed += [
            f"{section}.{key}: {then[key]!r} -> {value!r}"
            for key, value in dataclasses.asdict(current).items()
            if then[key] != value and key not in RESUMABLE_CHANGES
        ]
    if changed:
        raise ValueError(
            f"{path}: written by a run with another config ({', '.join(changed)}); "
            "use another out_dir or resume=False"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    random.setstate(checkpoint["rng"]["python"])
    return checkpoint["state"]


def training_loss(
    model: RecommendationLLM, batch: dict[str, torch.Tensor], config: TrainConfig
) -> torch.Tensor:
    """The batch's loss as `train.loss`, `train.num_negatives` and `train.label_smoothing` say."""
    num_negatives = config.num_negatives if config.loss == "sampled" else 0
    return model.loss(batch, num_negatives, config.label_smoothing, config.loss_chunk_logits)


def optimizer_step(
    model: nn.Module, optimizer, scheduler, loss: torch.Tensor, config: TrainConfig
) -> float:
    """Backpropagate `loss`, clip the gradients to `config.grad_clip` (0: no clipping), step
    the optimizer and the rate schedule. -> the loss's value"""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.item()


def _train_epoch(
    model, optimizer, scheduler, windows, config: TrainConfig, progress: bool, epoch: int
) -> float:
    model.train()
    total, batches = 0.0, range(0, len(windows), config.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False)
    for start in bar:
        batch = make_batch(
            windows[start : start + config.batch_size], config.strategy == "sampling"
        )
        value = optimizer_step(
            model, optimizer, scheduler, training_loss(model, batch, config), config
        )
        total += value
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return total / max(len(batches), 1)


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


def adamw_with_warmup(groups: list[dict[str, Any]], config: TrainConfig) -> tuple:
    """AdamW over parameter groups and the warmup schedule. -> (optimizer, LambdaLR scheduler)"""
    # The fused kernel updates every tensor in one pass, where the default per-tensor loop took
    # ~7 ms of each Beauty step on 2 CPU cores (bench/results/step_profile/beauty.md).
    fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(config.warmup_steps))
    return optimizer, scheduler


def optimizer_and_scheduler(model: RecommendationLLM, config: TrainConfig) -> tuple:
    """`adamw_with_warmup`, with fine-tuned Item LLM layers at their own (smaller) learning
    rate. -> (optimizer, LambdaLR scheduler)"""
    tower = model.items.tower
    item_llm = [p for p in tower.parameters() if p.requires_grad] if tower is not None else []
    in_item_llm = {id(p) for p in item_llm}
    groups = [{"params": [p for p in model.parameters() if id(p) not in in_item_llm]}]
    if item_llm:
        groups.append({"params": item_llm, "lr": config.item_llm_lr})
    return adamw_with_warmup(groups, config)


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
    `train.recipe` is resolved first (`lite_rec.recipe.apply_recipe`): the checkpoint and the
    saved model hold the settings the run used."""
    model_config, train_config = apply_recipe(model_config, train_config, data)
    check_train_config(train_config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if train_config.threads > 0:
        torch.set_num_threads(train_config.threads)
    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    random.seed(train_config.seed)

    model = RecommendationLLM(model_config, data.n_items, text_embeddings).to(train_config.device)
    _attach_item_llm(model, data, item_llm)
    optimizer, scheduler = optimizer_and_scheduler(model, train_config)
    run = _Run(
        model, optimizer, scheduler, train_config, out_dir / CHECKPOINT_FILE, progress, on_epoch_end
    )
    if resume and run.checkpoint.exists():
        state = _restore_checkpoint(run.checkpoint, model, optimizer, scheduler, train_config)
    else:
        state = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "best_weights": None}
        state.update(bad_epochs=0, history=[], finished=False)
        model.items.refresh()  # a checkpoint already holds the table its weights produced

    sequences = data.train_sequences()
    while not state["finished"] and state["epoch"] < train_config.epochs:
        row = run.train_epoch(sequences, state["epoch"] + 1)
        metrics = evaluate(model, data, "valid", train_config.eval_batch_size)
        row.update({f"valid_{k}": v for k, v in metrics.items()})
        _record_epoch(state, row, model, train_config)
        decay_on_plateau(scheduler, state["bad_epochs"], train_config)
        run.finish_epoch(
            state,
            row,
            f"epoch {row['epoch']}: loss {row['loss']:.4f}, valid ndcg@10 "
            f"{metrics['ndcg@10']:.4f}, recall@10 {metrics['recall@10']:.4f}",
        )
    _refit(run, data, state)
    # Fine-tuned Item LLM layers are not saved: the text table they produced is, so the model
    # is what load_model gives.
    model.items.tower = None
    refits = state["refit_history"]
    save_model(model, out_dir, len(refits))
    return TrainResult(model, state["best_epoch"], state["history"], train_config, refits)


@dataclass
class _Run:
    """What each epoch of one `train` call works with."""

    model: RecommendationLLM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    config: TrainConfig
    checkpoint: Path
    progress: bool = True
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    started: float = 0.0  # when the current epoch began

    def train_epoch(self, sequences: list[np.ndarray], epoch: int) -> dict[str, Any]:
        """One pass over `sequences` in the epoch's order. -> the history row so far"""
        self.started = time.perf_counter()
        windows = epoch_windows(sequences, self.config, self.model.config.max_len, epoch)
        loss = _train_epoch(
            self.model, self.optimizer, self.scheduler, windows, self.config, self.progress, epoch
        )
        self.model.items.refresh()  # a fine-tuned Item LLM's table, from this epoch's weights
        # The rate this epoch trained at after warmup; the seconds count the evaluation too.
        return {"epoch": epoch, "loss": loss, "lr": self.scheduler.base_lrs[0]}

    def finish_epoch(self, state: dict[str, Any], row: dict[str, Any], line: str) -> None:
        """Time the epoch, show `line`, checkpoint, then call `on_epoch_end(row)`."""
        row["seconds"] = time.perf_counter() - self.started
        line = f"{line} ({row['seconds']:.1f} s)"
        if self.progress:
            tqdm.write(line)
        else:  # no bars (benchmarks, Dagster): the log still shows the run moving
            log.info("%s: %s", self.checkpoint.parent.name, line)
        _save_checkpoint(
            self.checkpoint, self.model, self.optimizer, self.scheduler, state, self.config
        )
        if self.on_epoch_end is not None:
            self.on_epoch_end(row)


def _refit(run: _Run, data: SequenceData, state: dict[str, Any]) -> None:
    """Leave the model with the best epoch's weights, then train `train.refit_epochs` more
    epochs on `data.refit_sequences()` at the best epoch's rate, checkpointing each (a resumed
    run continues the refit: the best weights are loaded only before its first epoch)."""
    config, scheduler = run.config, run.scheduler
    done = len(state.setdefault("refit_history", []))  # a checkpoint from before refits: none
    if done > config.refit_epochs:
        raise ValueError(
            f"{run.checkpoint}: holds {done} refit epochs, more than train.refit_epochs="
            f"{config.refit_epochs}; use another out_dir or resume=False"
        )
    if done == 0 and state["best_weights"] is not None:
        run.model.load_state_dict(state["best_weights"])
    if done == 0 and config.refit_epochs > 0 and state["history"]:
        scale = state["history"][state["best_epoch"] - 1]["lr"] / scheduler.base_lrs[0]
        scheduler.base_lrs = [base * scale for base in scheduler.base_lrs]
        warmup = scheduler.lr_lambdas[0](scheduler.last_epoch)
        for group, base in zip(run.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * warmup
    sequences = data.refit_sequences()
    for refit in range(done + 1, config.refit_epochs + 1):
        # Numbered on from the main epochs: the window order is seeded by the number.
        row = {**run.train_epoch(sequences, state["epoch"] + refit), "refit_epoch": refit}
        state["refit_history"].append(row)
        run.finish_epoch(
            state, row, f"refit epoch {refit}, validation items included: loss {row['loss']:.4f}"
        )
