"""The Item LLM's architecture with random weights, for the ablation that measures what the
pre-trained knowledge is worth: the same tokenizer, layers, pooling and normalisation, only the
weights are drawn from the architecture's initialisation instead of loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lite_rec.config import ItemLLMConfig
from lite_rec.item_embeddings import ItemEncoder, item_text


def random_item_embeddings(
    items: pd.DataFrame, config: ItemLLMConfig, cache_dir: str | Path, seed: int = 0
) -> np.ndarray:
    """(n_items, d) vectors from a randomly initialised copy of `config.model`, cached in
    `cache_dir` by the item texts, the settings and the seed."""
    from transformers import AutoConfig, AutoModel

    texts = item_text(items, config.template)
    settings = f"{config.model}|{config.pooling}|{config.max_length}|{config.normalize}|{seed}"
    digest = hashlib.sha256("\n".join([settings, *texts]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"random-init-{digest}.npy"
    if path.is_file():
        return np.load(path)
    encoder = ItemEncoder(config.model, config.pooling, config.max_length, config.normalize)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(encoder.model.config._name_or_path))
    encoder.model = model.requires_grad_(False).eval()
    matrix = encoder.encode(texts, config.batch_size, progress=False).numpy().astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix
