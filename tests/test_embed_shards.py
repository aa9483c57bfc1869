"""Item embedding in shards: `lite-rec embed DATA --shard I/N` fills the one cache with the
items of a hash range of their ids; shards run at once on one cache, the unsharded command then
encodes nothing, and an edited item is re-encoded by its shard alone."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lite_rec.cli import main
from lite_rec.item_embeddings import item_shards, load_item_embeddings, parse_shard
from lite_rec.sequences import ITEMS_FILE
from tests.conftest import write_movielens


def shard_by_definition(item_id: str, shards: int) -> int:
    prefix = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:4], "big")  # h < 2^32
    return prefix * shards // 2**32


@pytest.mark.parametrize("seed", range(5))
def test_every_item_falls_in_the_one_shard_its_hash_range_names(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"item-{value}" for value in rng.integers(0, 10**9, size=300)]
    for shards in (1, 2, 3, 7, 64):
        found = item_shards(ids, shards)
        assert found.tolist() == [shard_by_definition(i, shards) for i in ids]
        assert found.min() >= 0 and found.max() < shards
        # An id's shard does not depend on the rest of the catalog.
        assert item_shards(ids[::-1], shards).tolist() == found[::-1].tolist()
    assert item_shards([], 4).tolist() == []


def test_shards_split_a_catalog_about_evenly() -> None:
    counts = np.bincount(item_shards([str(i) for i in range(40_000)], 4), minlength=4)
    assert counts.sum() == 40_000 and (abs(counts - 10_000) < 400).all()


@pytest.mark.parametrize("text", ["3/2", "a/b", "0/0", "-1/2", "1", "2/2", "1/-3"])
def test_a_bad_shard_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=rf"--shard '{text}': expected I/N with N >= 1"):
        parse_shard(text)


def _embed(data: Path, cache: Path, model: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lite_rec.cli", "embed", str(data), "--cache", str(cache)]
    command += ["--set", f"item_llm.model={model}", "--set", "item_llm.batch_size=2", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, error = process.communicate(timeout=300)
    assert process.returncode == 0, error[-2000:]


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    source = write_movielens(tmp_path / "raw", users=6, items=12)
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    return tmp_path / "data"


def test_shards_fill_one_cache_and_an_edit_is_reencoded_by_its_shard_alone(
    data: Path, tmp_path: Path, tiny_model: str
) -> None:
    cache = tmp_path / "cache"
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    running = [
        _embed(data, cache, tiny_model, "--shard", f"{i}/2", "--out", str(shards[i]))
        for i in (0, 1)
    ]
    for process in running:  # both at once, on one cache folder
        _finish(process)
    item_ids = pd.read_parquet(data / ITEMS_FILE)["item_id"].astype(str).tolist()
    owner = item_shards(item_ids, 2)
    for i, folder in enumerate(shards):
        ids, matrix = load_item_embeddings(folder)
        assert ids == [item for item, s in zip(item_ids, owner, strict=True) if s == i]
        assert _report(folder)["encoded"] == len(ids) == len(matrix)
    assert sum(len(load_item_embeddings(f)[0]) for f in shards) == len(item_ids)

    # The unsharded command finds every item in the cache, as one run from scratch encodes it.
    _finish(_embed(data, cache, tiny_model, "--out", str(tmp_path / "merged")))
    _finish(_embed(data, tmp_path / "fresh", tiny_model, "--out", str(tmp_path / "unsharded")))
    assert _report(tmp_path / "merged")["encoded"] == 0
    merged, unsharded = (
        load_item_embeddings(tmp_path / "merged"),
        load_item_embeddings(tmp_path / "unsharded"),
    )
    assert merged[0] == unsharded[0] == item_ids
    np.testing.assert_allclose(merged[1], unsharded[1], rtol=0, atol=1e-6)

    # One title edited: every shard runs again, and only the edited item's shard encodes it.
    items = pd.read_parquet(data / ITEMS_FILE)
    items.loc[3, "title"] = "An edited title (1999)"
    items.to_parquet(data / ITEMS_FILE)
    edited = int(owner[item_ids.index(str(items.loc[3, "item_id"]))])
    for i in (0, 1):
        _finish(_embed(data, cache, tiny_model, "--shard", f"{i}/2", "--out", str(shards[i])))
    assert [_report(folder)["encoded"] for folder in shards] == [int(i == edited) for i in (0, 1)]


def test_a_bad_shard_exits_2_with_one_line_and_writes_nothing(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    code = main(["embed", str(data), "--out", str(out), "--shard", "2/2"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lite-rec embed: error: --shard '2/2': expected I/N with N >= 1 shards and 0 <= I < N "
        "(0-based), e.g. 0/4"
    ]
    assert not out.exists()
    assert main(["embed", str(data)]) == 2
    assert "--out: expected the folder to write, or --shard I/N" in capsys.readouterr().err
