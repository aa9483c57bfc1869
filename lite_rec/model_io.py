"""A trained model on disk: `model.pt` (the state dict, the Item LLM table included) and
`model_config.json` (what rebuilds the module). Loading needs torch and the model only, not
the training code, so serving and `lite-rec recommend` start fast."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lite_rec.config import ModelConfig, saved_section
from lite_rec.model import RecommendationLLM

MODEL_FILE = "model.pt"
MODEL_CONFIG_FILE = "model_config.json"


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
        "model": dataclasses.asdict(model.config),
        "n_items": model.n_items,
        "text_dim": model.item_llm_dim,  # the key's name predates model.text_dim
        "refit_epochs": refit_epochs,
    }
    (out_dir / MODEL_CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")


def trained_on_validation_items(out_dir: str | Path) -> bool:
    """Whether the model `save_model` wrote to `out_dir` had refit epochs."""
    description = json.loads((Path(out_dir) / MODEL_CONFIG_FILE).read_text())
    return description.get("refit_epochs", 0) > 0


def load_model(out_dir: str | Path) -> RecommendationLLM:
    """Rebuild the model `save_model` wrote, in eval mode."""
    out_dir = Path(out_dir)
    description = json.loads((out_dir / MODEL_CONFIG_FILE).read_text())
    config = ModelConfig(**saved_section("model", description["model"], ModelConfig()))
    text_dim = description["text_dim"]
    placeholder = (
        np.zeros((description["n_items"], text_dim), dtype=np.float32) if text_dim else None
    )
    model = RecommendationLLM(config, description["n_items"], placeholder)
    model.load_state_dict(torch.load(out_dir / MODEL_FILE, weights_only=True, map_location="cpu"))
    return model.eval()
