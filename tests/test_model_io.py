"""Saving and loading trained models, and reading the files of older format versions.

tests/data/models/legacy_v1_* are tiny models (20 items, width 8, one layer, max_len 5) as
format version 1 saved them, each with the scores it gave for three histories (scores.json):
`legacy_v1_text` keeps 4 whitened principal directions of a 6-wide Item LLM (text+id,
positions from the end), `legacy_v1_id` is id only with an untied output layer."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lite_rec.model_io import (
    FORMAT_VERSION,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    VERSION_1_ABSENT_KEYS,
    load_model,
    save_model,
    trained_on_validation_items,
    upgrade_model_section,
    upgrade_state_dict,
)

MODELS = Path(__file__).parent / "data" / "models"
LEGACY = ["legacy_v1_text", "legacy_v1_id"]


def recorded(name: str) -> tuple[list[np.ndarray], torch.Tensor]:
    """The histories of a committed model and the scores it gave them when saved."""
    values = json.loads((MODELS / name / "scores.json").read_text())
    return [np.array(h) for h in values["histories"]], torch.tensor(values["scores"])


def assert_scores_as_recorded(model, name: str) -> None:
    histories, scores = recorded(name)
    # Matrix kernels differ between CPUs in the last float32 bit; a lost or misread tensor
    # moves scores by far more (they range over several units).
    torch.testing.assert_close(model.score(histories), scores, rtol=1e-6, atol=1e-6)


def copy_of(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODELS / name, tmp_path / name))


def rewrite_config(out_dir: Path, change) -> None:
    path = out_dir / MODEL_CONFIG_FILE
    description = json.loads(path.read_text())
    change(description)
    path.write_text(json.dumps(description))


@pytest.mark.parametrize("name", LEGACY)
def test_a_format_1_model_loads_and_scores_as_it_did_when_saved(name):
    model = load_model(MODELS / name)
    assert not model.training
    assert_scores_as_recorded(model, name)
    assert not trained_on_validation_items(MODELS / name)


def test_a_format_1_text_transform_and_item_llm_width_get_their_names():
    """Version 1 saved the whitening-and-PCA transform as `items.text_whitening` and the Item
    LLM's width (6) as a top-level `text_dim`, beside model.text_dim (4 kept directions)."""
    out_dir = MODELS / "legacy_v1_text"
    saved = torch.load(out_dir / MODEL_FILE, weights_only=True)
    model = load_model(out_dir)
    assert model.item_llm_dim == 6 and model.config.text_dim == 4
    assert model.items.text_transform.shape == (6, 4)
    assert torch.equal(model.items.text_transform, saved["items.text_whitening"])
    assert "items.text_whitening" not in model.state_dict()


def test_a_saved_model_writes_the_current_format_and_reloads(tmp_path):
    model = load_model(MODELS / "legacy_v1_text")
    save_model(model, tmp_path, refit_epochs=2)
    description = json.loads((tmp_path / MODEL_CONFIG_FILE).read_text())
    assert description == {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model.config),
        "n_items": 20,
        "item_llm_dim": 6,
        "refit_epochs": 2,
    }
    assert "items.text_transform" in torch.load(tmp_path / MODEL_FILE, weights_only=True)
    reloaded = load_model(tmp_path)
    assert reloaded.config == model.config
    histories, _ = recorded("legacy_v1_text")
    assert torch.equal(reloaded.score(histories), model.score(histories))
    assert trained_on_validation_items(tmp_path)


def test_format_1_files_lacking_newer_keys_take_the_behaviour_before_them(tmp_path):
    """A version 1 file without `model.positions` (nor the text table's keys) counts positions
    from the first item, as its model was trained, whatever the default."""
    out_dir = copy_of("legacy_v1_id", tmp_path)  # saved with positions "start"

    def drop_newer_keys(description):
        for key in VERSION_1_ABSENT_KEYS:
            del description["model"][key]
        del description["refit_epochs"]

    rewrite_config(out_dir, drop_newer_keys)
    model = load_model(out_dir)
    assert model.config.positions == "start"
    # The values are the behaviour of version 1's code, written down, not today's defaults.
    assert upgrade_model_section({}, 1) == VERSION_1_ABSENT_KEYS
    assert upgrade_model_section({"positions": "end"}, 1)["positions"] == "end"
    assert upgrade_model_section({}, 2) == {}
    assert_scores_as_recorded(model, "legacy_v1_id")
    assert not trained_on_validation_items(out_dir)


def test_a_model_section_without_a_key_or_with_an_unknown_one_is_refused_by_name(tmp_path):
    out_dir = tmp_path / "m"
    out_dir.mkdir()
    save_model(load_model(MODELS / "legacy_v1_id"), out_dir)
    rewrite_config(out_dir, lambda description: description["model"].pop("positions"))
    with pytest.raises(ValueError, match=r"model_config.json: the model section lacks positions"):
        load_model(out_dir)
    rewrite_config(out_dir, lambda description: description["model"].update(positions="start"))
    rewrite_config(out_dir, lambda description: description["model"].update(colour="red"))
    with pytest.raises(ValueError, match=r"model_config.json: unknown model keys colour"):
        load_model(out_dir)


def test_a_newer_format_is_refused(tmp_path):
    out_dir = copy_of("legacy_v1_id", tmp_path)
    rewrite_config(out_dir, lambda description: description.update(format_version=99))
    with pytest.raises(ValueError, match=r"format_version 99 is newer than this code reads"):
        load_model(out_dir)


def test_upgrade_state_dict_renames_only_what_the_version_changed():
    """Checkpoints hold model state dicts too: they go through the same renames."""
    transform, table = torch.randn(6, 4), torch.randn(21, 4)
    upgraded = upgrade_state_dict({"items.text_whitening": transform, "items.text": table}, 1)
    assert list(upgraded) == ["items.text_transform", "items.text"]
    assert upgraded["items.text_transform"] is transform and upgraded["items.text"] is table
    current = {"items.text_transform": transform, "items.text": table}
    assert upgrade_state_dict(current, FORMAT_VERSION) is current
