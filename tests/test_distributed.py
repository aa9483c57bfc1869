"""Data-parallel training: batch sharding and loss weights, validation across ranks, and two
gloo processes training, resuming and handing their checkpoint to one process."""

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lite_rec import distributed
from lite_rec.cli import main
from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.evaluate import evaluate
from lite_rec.model import RecommendationLLM
from lite_rec.nn.sampled_softmax import NegativeSampler
from lite_rec.sequences import LOSS_WEIGHT, WindowBatches, epoch_batches
from lite_rec.train import CHECKPOINT_FILE, train
from lite_rec.trainer import seed_everything
from tests.conftest import cyclic_data, write_movielens

# 61 users: an odd count, so neither the windows nor the users split evenly over 2 ranks.
DATA = {"n_items": 20, "n_users": 61, "min_length": 6, "spread": 5}
MODEL = ModelConfig(
    item_repr="id", hidden_size=16, num_layers=1, num_heads=2, dropout=0.1, max_len=6
)
NEGATIVE_SEED = 11
TRAIN = TrainConfig(
    batch_size=16, lr=1e-2, warmup_steps=2, patience=100, seed=3, threads=1, nproc=2
)


def test_every_rank_gets_the_same_number_of_batches_and_together_every_window() -> None:
    windows = np.arange(1, 1 + 37 * 4).reshape(37, 4)  # 37 windows: batches of 8, 8, 8, 8, 5
    parts = [list(WindowBatches(windows, 8, False, rank, 3)) for rank in range(3)]
    assert [len(WindowBatches(windows, 8, False, rank, 3)) for rank in range(3)] == [5, 5, 5]
    assert [len(p) for p in parts] == [5, 5, 5]
    rows = [
        tuple(row) for p in parts for batch in p for row in batch["input_ids"].tolist()
    ]  # input_ids drop each window's last column
    assert sorted(rows) == sorted(tuple(row) for row in windows[:, :3].tolist())
    # A last batch with fewer windows than ranks is left out on every rank: 33 = 4 x 8 + 1.
    assert [len(WindowBatches(windows[:33], 8, False, rank, 2)) for rank in range(2)] == [4, 4]
    assert len(WindowBatches(windows[:33], 8, False)) == 5  # one process keeps it


def test_the_ranks_weighted_losses_average_to_the_whole_batchs_loss_and_gradient() -> None:
    data = cyclic_data(**DATA)
    config = dataclasses.replace(TRAIN, batch_size=24)
    model_config = dataclasses.replace(MODEL, dropout=0.0)
    seed_everything(0)
    model = RecommendationLLM(model_config, data.n_items)
    sequences = data.train_sequences()
    whole = next(iter(epoch_batches(sequences, config, model_config.max_len, 1)))
    model.zero_grad()
    expected_loss = model.loss(whole)
    expected_loss.backward()
    expected = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    losses = []
    model.zero_grad()
    for rank in range(3):  # 3 ranks: parts of 8 windows with different target counts
        part = next(iter(epoch_batches(sequences, config, model_config.max_len, 1, rank, 3)))
        loss = model.loss(part) * part.pop(LOSS_WEIGHT) / 3  # DDP averages over the ranks
        loss.backward()
        losses.append(loss.item())
    averaged = [p.grad for p in model.parameters() if p.grad is not None]
    assert sum(losses) == pytest.approx(expected_loss.item(), rel=1e-5)
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(averaged, expected, strict=True))


def test_a_user_shard_holds_every_nth_user_and_the_whole_catalog() -> None:
    data = cyclic_data(**DATA)
    shard = data.user_shard(1, 2)
    assert list(shard.user_ids) == list(data.user_ids[1::2])
    assert shard.n_items == data.n_items
    histories, targets = shard.histories_and_targets("valid")
    all_histories, all_targets = data.histories_and_targets("valid")
    assert list(targets) == list(all_targets[1::2])
    assert all(np.array_equal(h, a) for h, a in zip(histories, all_histories[1::2], strict=True))


def test_launcher_command_runs_the_cli_under_torchrun() -> None:
    command = distributed.launcher_command(2, ["train", "data", "--out", "m"])
    assert command == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        "-m",
        "lite_rec.cli",
        "train",
        "data",
        "--out",
        "m",
    ]
    several = distributed.launcher_command(4, ["train"], 2, 1, "host:29400")
    assert several[3:7] == [
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=host:29400",
        "--node-rank=1",
    ]
    with pytest.raises(ValueError, match="--nnodes 2: expected --rdzv-endpoint"):
        distributed.launcher_command(1, ["train"], 2)


def _two_ranks(rank: int, root: Path) -> None:
    """One gloo rank of the data-parallel checks; writes what it saw to root/rank{rank}.pt."""
    dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    data = cyclic_data(**DATA)
    seed_everything(0)
    model = RecommendationLLM(MODEL, data.n_items).eval()
    seen = {
        "valid_across_ranks": distributed.evaluate_across_ranks(model, data, "valid"),
        "valid_one_process": evaluate(model, data, "valid"),
    }
    torch.manual_seed(NEGATIVE_SEED + rank)
    seen["negatives"] = [NegativeSampler(DATA["n_items"], 5).draw() for _ in range(2)]
    config = dataclasses.replace(TRAIN, loss="sampled", num_negatives=5)
    straight = train(
        data, None, MODEL, dataclasses.replace(config, epochs=3), root / "a", progress=False
    )
    train(data, None, MODEL, dataclasses.replace(config, epochs=1), root / "b", progress=False)
    resumed = train(
        data, None, MODEL, dataclasses.replace(config, epochs=3), root / "b", progress=False
    )
    seen["straight_history"] = [
        {k: v for k, v in r.items() if k != "seconds"} for r in straight.history
    ]
    seen["resumed_history"] = [
        {k: v for k, v in r.items() if k != "seconds"} for r in resumed.history
    ]
    seen["straight_weights"] = straight.model.state_dict()
    seen["resumed_weights"] = resumed.model.state_dict()
    torch.save(seen, root / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_two_ranks, args=(root,), nprocs=2, start_method="spawn")
    seen = [torch.load(root / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    return {"root": root, "seen": seen}


def test_validation_across_ranks_equals_one_process(two_ranks: dict) -> None:
    for seen in two_ranks["seen"]:
        one, across = seen["valid_one_process"], seen["valid_across_ranks"]
        assert list(across) == list(one)
        assert all(across[k] == pytest.approx(one[k], rel=1e-12, abs=1e-15) for k in one)
    assert two_ranks["seen"][0]["valid_across_ranks"] == two_ranks["seen"][1]["valid_across_ranks"]


def test_the_ranks_draw_shares_of_the_negatives_and_all_score_against_all_of_them(
    two_ranks: dict,
) -> None:
    # 5 negatives over 2 ranks: each draws 3 from its own stream; rank 0's 3, then rank 1's
    # first 2, in every step, on both ranks.
    shares = []
    for rank in range(2):
        torch.manual_seed(NEGATIVE_SEED + rank)
        shares.append([torch.randint(0, DATA["n_items"], (3,)) for _ in range(2)])
    for step in range(2):
        expected = torch.cat([shares[0][step], shares[1][step]])[:5]
        for seen in two_ranks["seen"]:
            items, log_q = seen["negatives"][step]
            assert torch.equal(items, expected)
            assert torch.allclose(log_q, torch.full((5,), -np.log(DATA["n_items"])))


def test_ranks_keep_the_same_weights_and_history(two_ranks: dict) -> None:
    first, second = two_ranks["seen"]
    assert first["straight_history"] == second["straight_history"]
    assert len(first["straight_history"]) == 3
    weights = first["straight_weights"]
    assert all(torch.equal(weights[k], second["straight_weights"][k]) for k in weights)


def test_two_ranks_resume_to_identical_weights(two_ranks: dict) -> None:
    seen = two_ranks["seen"][0]
    assert seen["resumed_history"] == seen["straight_history"]
    straight, resumed = seen["straight_weights"], seen["resumed_weights"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_rank_zero_alone_writes_and_one_process_resumes_its_checkpoint(two_ranks: dict) -> None:
    root = two_ranks["root"]
    assert {p.name for p in (root / "a").iterdir()} >= {"model.pt", CHECKPOINT_FILE}
    checkpoint = torch.load(root / "a" / CHECKPOINT_FILE, weights_only=False)
    assert len(checkpoint["rank_rngs"]) == 2
    shutil.copytree(root / "a", root / "one")
    data = cyclic_data(**DATA)
    config = dataclasses.replace(TRAIN, loss="sampled", num_negatives=5, epochs=4, nproc=1)
    resumed = train(data, None, MODEL, config, root / "one", progress=False)
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    assert history[:3] == two_ranks["seen"][0]["straight_history"]
    assert len(history) == 4


def test_data_parallel_training_refuses_sparse_id_gradients(tmp_path: Path, capsys) -> None:
    source = write_movielens(tmp_path / "raw", users=10, items=8)
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    settings = ["model.item_repr=id", "train.loss=sampled", "train.sparse_id_gradients=true"]
    args = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "model"), "--nproc", "2"]
    assert main([*args, *(arg for s in settings for arg in ("--set", s))]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "lite-rec train: error: train.sparse_id_gradients=true: not supported with 2 "
        "data-parallel processes (train.nproc); expected train.sparse_id_gradients=false "
        "(dense) or train.nproc=1"
    ]
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun's workers on Linux")
def test_the_cli_trains_in_two_processes_through_torchrun(tmp_path: Path) -> None:
    import subprocess

    source = write_movielens(tmp_path / "raw", users=12, items=8)
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    settings = ["model.item_repr=id", "model.hidden_size=16", "train.epochs=2", "train.threads=1"]
    command = [
        sys.executable,
        "-m",
        "lite_rec.cli",
        "train",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "model"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--nproc",
        "2",
        *(arg for s in settings for arg in ("--set", s)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and '"best_epoch"' in printed[0]  # rank 0 alone reports
    assert (tmp_path / "model" / "model.pt").is_file()
