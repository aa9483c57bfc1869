"""A trained model on disk: `model.pt` (the state dict, the Item LLM table included) and
`model_config.json` (what rebuilds the module). Loading needs torch and the model only, not
the training code, so serving and `lite-rec recommend` start fast.

`model_config.json` says which `format_version` wrote it. A file of an older version is
upgraded once, on reading, to the current one: keys and state-dict names that changed are
mapped, and model keys the file lacks take the behaviour its code had without them. A change
to either file (a new `ModelConfig` key, a renamed buffer) bumps `FORMAT_VERSION` and adds the
step from the version before."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lite_rec.config import ModelConfig
from lite_rec.model import RecommendationLLM

MODEL_FILE = "model.pt"
MODEL_CONFIG_FILE = "model_config.json"
FORMAT_VERSION = 2

# Model keys that a version 1 file may lack, written before the key existed, and the value
# that behaves as its code did without it.
VERSION_1_ABSENT_KEYS: dict[str, Any] = {
    "positions": "start",
    "whiten_text": False,
    "text_dim": 0,
    "finetune_layers": 1,
    "finetune_items_per_step": 256,
}
# State-dict names that version 2 changed: the text table's transform is whitening and/or PCA.
VERSION_1_RENAMED_STATE: dict[str, str] = {"items.text_whitening": "items.text_transform"}


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary sibling, then rename it over `path`."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def save_model(model: RecommendationLLM, out_dir: str | Path, refit_epochs: int = 0) -> None:
    """`model.pt` (state dict, item text embeddings included) + `model_config.json`, which
    also says how many refit epochs trained on the validation items."""
    out_dir = Path(out_dir)
    atomic_save(model.state_dict(), out_dir / MODEL_FILE)
    description = {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model.config),
        "n_items": model.n_items,
        "item_llm_dim": model.item_llm_dim,  # the width the text table is rebuilt from
        "refit_epochs": refit_epochs,
    }
    (out_dir / MODEL_CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")


def upgrade_model_section(model: dict[str, Any], format_version: int) -> dict[str, Any]:
    """A saved `ModelConfig` dict of `format_version` as the current version reads it."""
    if format_version < 2:
        model = {**VERSION_1_ABSENT_KEYS, **model}
    return model


def upgrade_state_dict(
    state: dict[str, torch.Tensor], format_version: int
) -> dict[str, torch.Tensor]:
    """A `RecommendationLLM` state dict saved by `format_version` (a model, a checkpoint)
    with the current version's names."""
    if format_version < 2:
        state = {VERSION_1_RENAMED_STATE.get(name, name): value for name, value in state.items()}
    return state


def _read_model_config(out_dir: Path) -> tuple[dict[str, Any], int]:
    """The `model_config.json` in `out_dir` as `FORMAT_VERSION` reads it (its model section
    holds every `ModelConfig` key), without `format_version`, and the version that wrote it."""
    path = out_dir / MODEL_CONFIG_FILE
    description = json.loads(path.read_text())
    version = description.pop("format_version", 1)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version} is newer than this code reads ({FORMAT_VERSION})"
        )
    if version < 2:  # the Item LLM's width was "text_dim", beside model.text_dim
        description["item_llm_dim"] = description.pop("text_dim")
        description.setdefault("refit_epochs", 0)
    description["model"] = upgrade_model_section(description["model"], version)
    _check_model_section(description["model"], path)
    return description, version


def _check_model_section(model: dict[str, Any], path: Path) -> None:
    """Refuse a model section whose keys are not exactly `ModelConfig`'s, naming them."""
    fields = {field.name for field in dataclasses.fields(ModelConfig)}
    missing, unknown = sorted(fields - set(model)), sorted(set(model) - fields)
    if missing:
        raise ValueError(
            f"{path}: the model section lacks {', '.join(missing)}; a new ModelConfig key "
            "needs a FORMAT_VERSION step that says how files without it behave"
        )
    if unknown:
        raise ValueError(f"{path}: unknown model keys {', '.join(unknown)}")


def trained_on_validation_items(out_dir: str | Path) -> bool:
    """Whether the model `save_model` wrote to `out_dir` had refit epochs."""
    description, _ = _read_model_config(Path(out_dir))
    return description["refit_epochs"] > 0


def load_model(out_dir: str | Path) -> RecommendationLLM:
    """Rebuild the model `save_model` wrote (any format version), in eval mode."""
    out_dir = Path(out_dir)
    description, version = _read_model_config(out_dir)
    config = ModelConfig(**description["model"])
    n_items, item_llm_dim = description["n_items"], description["item_llm_dim"]
    # The text table and its transform come with the weights: a placeholder of the Item LLM's
    # width builds a module of the right shapes.
    placeholder = np.zeros((n_items, item_llm_dim), dtype=np.float32) if item_llm_dim else None
    model = RecommendationLLM(config, n_items, placeholder)
    state = torch.load(out_dir / MODEL_FILE, weights_only=True, map_location="cpu")
    model.load_state_dict(upgrade_state_dict(state, version))
    return model.eval()
