"""Data-parallel training: the process group torchrun's workers join, which rank is which, and
the collectives the trainer and validation need.

`lite-rec train --nproc N` starts `python -m torch.distributed.run` (torchrun), which runs the
same command in N worker processes with WORLD_SIZE, RANK and LOCAL_RANK in their environment;
a worker sees them and trains instead of launching again. Every rank builds the same model
from the same seed and cuts the same epoch windows; each trains on its share of every batch
(`lite_rec.sequences.WindowBatches`), DistributedDataParallel averages the gradients, and
validation ranks each rank's share of the users. Rank 0 alone writes files and logs to
MLflow; every rank takes part in every collective."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from lite_rec.evaluate import evaluate
from lite_rec.sequences import SequenceData


def launched() -> bool:
    """Whether this process is a worker that torchrun started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def launcher_command(
    nproc: int,
    command: Sequence[str],
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
) -> list[str]:
    """The torchrun command line that runs `python -m lite_rec.cli *command` in `nproc`
    workers on this machine, one of `nnodes` machines meeting at `rdzv_endpoint`
    (host:port). One machine without an endpoint: `--standalone`, a free local port, so two
    trainings on one machine do not collide."""
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes > 1 or rdzv_endpoint:
        if not rdzv_endpoint:
            raise ValueError(f"--nnodes {nnodes}: expected --rdzv-endpoint HOST:PORT as well")
        launcher += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
        ]
        if node_rank is not None:
            launcher.append(f"--node-rank={node_rank}")
    else:
        launcher.append("--standalone")
    return [*launcher, "-m", "lite_rec.cli", *command]


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join torchrun's process group when this process is one of its workers (gloo on cpu,
    nccl on cuda, each rank on the GPU of its LOCAL_RANK), and leave it at the end; a plain
    process runs as it is."""
    if not launched() or dist.is_initialized():
        yield
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def exit_worker() -> None:
    """End a torchrun worker after it left the process group, its logs and streams flushed,
    without the interpreter's teardown (a plain process returns): there, while rank 0 was
    still saving and logging, gloo's threads were seen to abort a worker whose training had
    succeeded (SIGABRT, "terminate called without an active exception"), and torchrun then
    failed the whole run. For ranks other than 0, which write nothing."""
    if not launched():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _collective_device() -> torch.device:
    """Where tensors for a collective live: nccl reduces on the GPU, gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_across_ranks(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks, in float64 (the values alone without a group)."""
    if world_size() == 1:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def evaluate_across_ranks(
    model: torch.nn.Module, data: SequenceData, split: str, batch_size: int = 1024
) -> dict[str, float]:
    """`lite_rec.evaluate.evaluate` over the whole `split`, each rank ranking every
    world_size-th user: the metric means times the user counts are summed over the ranks and
    divided by the total, which is the one-process value up to float rounding (the order of
    the sum), the same on every rank, so early stopping decides once for all of them."""
    shard = data.user_shard(rank(), world_size())
    users = len(shard.user_ids)
    metrics = evaluate(model, shard, split, batch_size) if users else {}
    names = broadcast_from_main(list(metrics))  # rank 0 holds the first user
    sums = sum_across_ranks([users, *(metrics.get(name, 0.0) * users for name in names)])
    total = sums[0]
    return {name: value / total for name, value in zip(names, sums[1:], strict=True)}
