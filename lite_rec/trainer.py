"""The one training loop, for Lite-LLM4Rec and every baseline: AdamW with warmup and gradient
clipping, validation after every epoch, the learning rate decayed on a plateau, early stopping
on validation NDCG@10 keeping the best epoch's weights, then `train.refit_epochs` epochs that
include the validation items. Given a checkpoint path, it writes a checkpoint after every epoch
from which a crashed run resumes to bit-identical weights (CPU).

One rule for the rate and the stop: after each epoch, first the epoch counts as better or not
(`TrainState.record_epoch`, which also decides to stop), then the rate decays if the epochs
without a better score call for it, on the epoch that stops the run too: the rate follows the
validation scores alone, whatever `train.patience` is, and a checkpoint holds the rate its next
epoch would train at.

Data-parallel (a torch.distributed process group, `lite_rec.distributed`), every rank runs
this loop on its part of each batch, the loss through DistributedDataParallel; rank 0 alone
logs and writes the checkpoint, which holds the plain module's weights (so one process resumes
it, and the other way round) and every rank's RNG states."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lite_rec import distributed
from lite_rec.config import TrainConfig, saved_section
from lite_rec.model_io import (
    FORMAT_VERSION,
    atomic_save,
    upgrade_model_section,
    upgrade_state_dict,
)
from lite_rec.sequences import LOSS_WEIGHT

Batch = dict[str, torch.Tensor]
SELECTION_METRIC = "ndcg@10"
# Train-config fields a resumed run may change without changing the result it converges to.
# (`refit_epochs` acts after early stopping: a stopped run resumed with more refit epochs ends
# where a fresh run with them would.)
RESUMABLE_CHANGES = {
    "epochs",
    "max_steps",
    "patience",
    "threads",
    "eval_batch_size",
    "device",
    "refit_epochs",
    "nproc",
}


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_states() -> dict[str, Any]:
    """The states of the generators `seed_everything` seeds."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


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
    if config.nproc < 1:
        raise ValueError(f"train.nproc must be >= 1, got {config.nproc}")
    if config.max_steps < 0:
        raise ValueError(f"train.max_steps must be >= 0 (0: no limit), got {config.max_steps}")
    if config.min_delta < 0.0:
        raise ValueError(f"train.min_delta must be >= 0, got {config.min_delta}")
    if config.refit_epochs < 0 or (config.refit_epochs > 0 and config.epochs < 1):
        raise ValueError(
            "train.refit_epochs must be >= 0 and needs train.epochs >= 1 (it continues from "
            f"the best epoch), got {config.refit_epochs} and {config.epochs}"
        )


def warmup_schedule(warmup_steps: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class DenseAndSparseAdam(torch.optim.Optimizer):
    """Fused AdamW over the dense parameter groups and SparseAdam over the `sparse` ones
    (lazy Adam: a step updates the rows its sparse gradient has, and their moments), as one
    optimizer: the rate schedule sets the rates of both through one list of groups, and one
    state dict goes into the checkpoint."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.SparseAdam) -> None:
        params = [p for o in (dense, sparse) for group in o.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.optimizers = (dense, sparse)
        self.param_groups = [*dense.param_groups, *sparse.param_groups]  # the same dicts

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)


def adamw_with_warmup(groups: list[dict[str, Any]], config: TrainConfig) -> tuple:
    """AdamW over parameter groups and the warmup schedule; groups marked `"sparse": True`
    (parameters with sparse gradients) go to SparseAdam (`DenseAndSparseAdam`), which has no
    weight decay. -> (optimizer, LambdaLR scheduler)"""
    sparse = [{k: v for k, v in g.items() if k != "sparse"} for g in groups if g.get("sparse")]
    groups = [group for group in groups if not group.get("sparse")]
    # The fused kernel updates every tensor in one pass, where the default per-tensor loop took
    # ~7 ms of each Beauty step on 2 CPU cores (bench/results/step_profile/beauty.md).
    fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )
    if sparse:
        if config.weight_decay:
            raise ValueError(
                "train.sparse_id_gradients: SparseAdam has no weight decay; expected "
                f"train.weight_decay=0, got {config.weight_decay}"
            )
        optimizer = DenseAndSparseAdam(optimizer, torch.optim.SparseAdam(sparse, lr=config.lr))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(config.warmup_steps))
    return optimizer, scheduler


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> None:
    """Scale the gradients so that their joint L2 norm is at most `max_norm`, as
    `clip_grad_norm_` does, sparse gradients included (coalesced, their values counted)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not any(grad.is_sparse for grad in grads):
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    dense = [p.grad for p in parameters if p.grad is not None and not p.grad.is_sparse]
    values = [p.grad.values() for p in parameters if p.grad is not None and p.grad.is_sparse]
    total = torch.nn.utils.get_total_norm([*dense, *values])
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s
    for tensor in [*dense, *values]:  # a coalesced gradient's values() are its own
        tensor.mul_(scale)


def optimizer_step(
    model: nn.Module, optimizer, scheduler, loss: torch.Tensor, config: TrainConfig
) -> float:
    """Backpropagate `loss`, clip the gradients to `config.grad_clip` (0: no clipping), step
    the optimizer and the rate schedule. -> the loss's value"""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        clip_gradients(list(model.parameters()), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.item()


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


@dataclass
class TrainState:
    """Where a run stands after its last finished epoch; a checkpoint holds it."""

    epoch: int = 0  # main epochs done
    best_epoch: int = 0  # 1-based; 0 before the first epoch
    best_score: float = -1.0  # the best epoch's validation NDCG@10
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per main epoch
    finished: bool = False  # early stopping: no further main epoch
    refit_history: list[dict[str, Any]] = field(default_factory=list)  # one row per refit epoch
    steps: int = 0  # optimizer steps of the main epochs (train.max_steps)

    def record_epoch(self, row: dict[str, Any], model: nn.Module, config: TrainConfig) -> None:
        """Append the epoch's row (`epoch`, `valid_ndcg@10`, ...), keep the weights when it is
        better, and decide on early stopping."""
        self.history.append(row)
        self.epoch = row["epoch"]
        score = row[f"valid_{SELECTION_METRIC}"]
        if is_better(score, self.best_score, config):
            self.best_epoch, self.best_score, self.bad_epochs = row["epoch"], score, 0
            self.best_weights = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.finished = self.bad_epochs >= config.patience


@dataclass
class TrainResult:
    """What a training run leaves: the model and how it got there."""

    model: nn.Module  # holding the best epoch's weights (after the refit epochs: theirs)
    best_epoch: int  # 1-based; 0 when no epoch ran
    history: list[dict[str, Any]]  # per epoch: epoch, loss, lr, valid metrics, seconds
    train_config: TrainConfig  # as the run used it
    # per refit epoch (train.refit_epochs): epoch (numbered on), refit_epoch, loss, lr, seconds
    refit_history: list[dict[str, Any]] = field(default_factory=list)


class ModelLoss(nn.Module):
    """`loss(model, batch)` as a module's forward, for DistributedDataParallel to wrap: it
    averages the gradients of what its forward computed, and `model.loss` is not forward."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, Batch], torch.Tensor]):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss(self.model, batch)


@dataclass
class Trainer:
    """Trains `model` on `epoch_batches(epoch)` (1-based; an epoch's batches depend on its
    number alone), minimising `loss(model, batch)`, selecting on `validate(model)`'s NDCG@10."""

    model: nn.Module  # with a dataclass `config` when it checkpoints
    epoch_batches: Callable[[int], Iterable[Batch]]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    validate: Callable[[nn.Module], dict[str, float]]  # validation metrics, ndcg@10 among them
    config: TrainConfig
    # The refit epochs' batches (numbered on from the main epochs); None: no refit phase, the
    # best epoch's weights are the result whatever train.refit_epochs says.
    refit_batches: Callable[[int], Iterable[Batch]] | None = None
    # AdamW's parameter groups (another `lr` in a group overrides train.lr); None: one group.
    parameter_groups: list[dict[str, Any]] | None = None
    checkpoint: Path | None = None  # rewritten after every epoch; None: no checkpoint
    # Recomputes what the model derives from its weights outside the optimizer (a fine-tuned
    # Item LLM's text table): at a fresh start and after each epoch's steps.
    refresh: Callable[[], None] | None = None
    log: Callable[[str], None] | None = None  # gets one line per epoch
    progress: bool = False  # a progress bar per epoch
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None  # the row, after the checkpoint
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LambdaLR = field(init=False)
    started: float = field(init=False, default=0.0)  # when the current epoch began
    # The loss through DistributedDataParallel when data-parallel; None in one process.
    parallel_loss: nn.Module | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_train_config(self.config)
        groups = self.parameter_groups or [{"params": list(self.model.parameters())}]
        self.optimizer, self.scheduler = adamw_with_warmup(groups, self.config)
        if distributed.world_size() > 1:
            device = next(self.model.parameters()).device
            # Buffers (the Item LLM table) are the same on every rank and never trained:
            # syncing them before each step would only cost time. The graph is static: the
            # same parameters take part in every step, and some never do (the backbone's
            # unused token table), which DDP learns from the first step.
            self.parallel_loss = DistributedDataParallel(
                ModelLoss(self.model, self.loss),
                device_ids=[device.index] if device.type == "cuda" else None,
                forward_sync_buffers=False,
                static_graph=True,
            )

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until early stopping or `train.epochs`, then the refit epochs; with `resume`
        and a checkpoint on disk, pick up where it ends."""
        # Rank 0 holds the checkpoint (other machines may not see its disk).
        exists = self.checkpoint is not None and self.checkpoint.exists()
        if resume and self.checkpoint is not None and distributed.broadcast_from_main(exists):
            state = self._restore()
        else:
            state = TrainState()
            if self.refresh is not None:  # a checkpoint already holds what its weights made
                self.refresh()
        while not state.finished and state.epoch < self.config.epochs:
            limit = self.config.max_steps - state.steps if self.config.max_steps else None
            if limit is not None and limit <= 0:
                break  # train.max_steps reached; a resumed run with more goes on at the next epoch
            row, steps = self._train_epoch(self.epoch_batches, state.epoch + 1, limit)
            state.steps += steps
            metrics = self.validate(self.model)
            row.update({f"valid_{k}": v for k, v in metrics.items()})
            state.record_epoch(row, self.model, self.config)
            decay_on_plateau(self.scheduler, state.bad_epochs, self.config)
            self._finish_epoch(
                state,
                row,
                f"epoch {row['epoch']}: loss {row['loss']:.4f}, valid ndcg@10 "
                f"{metrics['ndcg@10']:.4f}, recall@10 {metrics['recall@10']:.4f}",
            )
        self._refit(state)
        model = self.model.eval()
        return TrainResult(model, state.best_epoch, state.history, self.config, state.refit_history)

    def _train_epoch(
        self, batches: Callable[[int], Iterable[Batch]], epoch: int, limit: int | None = None
    ) -> tuple[dict[str, Any], int]:
        """One pass over `batches(epoch)`, or its first `limit` steps. -> the history row so
        far, the steps taken"""
        self.started = time.perf_counter()
        self.model.train()
        total, steps = 0.0, 0
        bar = tqdm(batches(epoch), desc=f"epoch {epoch}", disable=not self.progress, leave=False)
        for batch in bar:
            if limit is not None and steps >= limit:
                break
            weight = batch.pop(LOSS_WEIGHT, None)  # data-parallel: this rank's share x ranks
            if self.parallel_loss is not None:
                loss = self.parallel_loss(batch)
            else:
                loss = self.loss(self.model, batch)
            if weight is not None:
                loss = loss * weight
            value = optimizer_step(self.model, self.optimizer, self.scheduler, loss, self.config)
            total, steps = total + value, steps + 1
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        if self.refresh is not None:
            self.refresh()
        # Data-parallel: the mean of the weighted part losses is the batches' mean loss.
        total = distributed.sum_across_ranks([total])[0] / distributed.world_size()
        # The rate this epoch trained at after warmup; the seconds count the evaluation too.
        row = {"epoch": epoch, "loss": total / max(steps, 1), "lr": self.scheduler.base_lrs[0]}
        return row, steps

    def _finish_epoch(self, state: TrainState, row: dict[str, Any], line: str) -> None:
        """Time the epoch, log `line`, checkpoint, then call `on_epoch_end(row)`."""
        row["seconds"] = time.perf_counter() - self.started
        if self.log is not None:
            self.log(f"{line} ({row['seconds']:.1f} s)")
        if self.checkpoint is not None:
            self._save(state)
        if self.on_epoch_end is not None:
            self.on_epoch_end(row)

    def _refit(self, state: TrainState) -> None:
        """Leave the model with the best epoch's weights, then train `train.refit_epochs` more
        epochs on `refit_batches` at the best epoch's rate, checkpointing each (a resumed run
        continues the refit: the best weights are loaded only before its first epoch)."""
        config, scheduler = self.config, self.scheduler
        epochs = config.refit_epochs if self.refit_batches is not None else 0
        done = len(state.refit_history)
        if done > epochs:
            raise ValueError(
                f"{self.checkpoint}: holds {done} refit epochs, more than train.refit_epochs="
                f"{epochs}; use another out_dir or resume=False"
            )
        if done == 0 and state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)
        if done == 0 and epochs > 0 and state.history:
            scale = state.history[state.best_epoch - 1]["lr"] / scheduler.base_lrs[0]
            scheduler.base_lrs = [base * scale for base in scheduler.base_lrs]
            warmup = scheduler.lr_lambdas[0](scheduler.last_epoch)
            for group, base in zip(self.optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base * warmup
        for refit in range(done + 1, epochs + 1):
            # Numbered on from the main epochs: the batches are seeded by the number.
            row, _ = self._train_epoch(self.refit_batches, state.epoch + refit)
            row["refit_epoch"] = refit
            state.refit_history.append(row)
            line = f"refit epoch {refit}, validation items included: loss {row['loss']:.4f}"
            self._finish_epoch(state, row, line)

    def _save(self, state: TrainState) -> None:
        """Everything the next epoch depends on, RNG states included (data-parallel: every
        rank's), written atomically by rank 0."""
        rngs = distributed.gather_to_all(rng_states())
        if not distributed.is_main():
            return
        checkpoint = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs[0],
            "rank_rngs": rngs,  # [rng] in one process
            "state": {f.name: getattr(state, f.name) for f in dataclasses.fields(state)},
            "format_version": FORMAT_VERSION,  # of the state dicts' names (lite_rec.model_io)
            "model_config": dataclasses.asdict(self.model.config),
            "train_config": dataclasses.asdict(self.config),
        }
        atomic_save(checkpoint, self.checkpoint)

    def _restore(self) -> TrainState:
        """Load what `_save` wrote into the model, optimizer, schedule and RNGs, refusing a
        checkpoint written with another config (beyond RESUMABLE_CHANGES). Data-parallel,
        rank 0 reads it and every rank gets its copy."""
        path = self.checkpoint
        main = distributed.is_main()
        checkpoint = torch.load(path, weights_only=False, map_location="cpu") if main else None
        checkpoint = distributed.broadcast_from_main(checkpoint)
        version = checkpoint.get("format_version", 1)
        # A key the checkpoint lacks is newer than the run: it behaved as before the key.
        saved = {
            "model": upgrade_model_section(checkpoint["model_config"], version),
            "train": checkpoint["train_config"],
        }
        wanted = {"model": self.model.config, "train": self.config}
        changed = []
        for section, current in wanted.items():
            then = saved_section(section, saved[section], type(current)())
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
        state = TrainState(**checkpoint["state"])
        if state.best_weights is not None:
            state.best_weights = upgrade_state_dict(state.best_weights, version)
        self.model.load_state_dict(upgrade_state_dict(checkpoint["model"], version))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        # Each rank resumes its own generators when the checkpoint has one per rank; a rank
        # the writing run did not have starts a stream of its own, as a fresh start does.
        rngs = checkpoint.get("rank_rngs") or [checkpoint["rng"]]
        if len(rngs) == distributed.world_size():
            set_rng_states(rngs[distributed.rank()])
        elif main:
            set_rng_states(rngs[0])
        else:
            seed_everything(self.config.seed + distributed.rank())
        return state
