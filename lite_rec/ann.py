"""The approximate item index for serving (`lite-rec index`): a faiss HNSW or IVF index, or a
ScaNN index, over the model's output vectors, searched for candidates that are then scored
exactly.

A score is an inner product plus a bias, `u . w_i + b_i`. The index holds item i as
`[w_i, b_i, sqrt(R^2 - |w_i|^2 - b_i^2)]` (R: the largest `|[w_i, b_i]|`) and is searched with
`[u, 1, 0]`: their squared L2 distance is `|u|^2 + 1 + R^2 - 2 (u . w_i + b_i)`, so the
nearest items are the best scorers. HNSW and IVF build their graph and clusters from
distances, which inner products are not: on a 181,224-item catalog (docs/operations.md), HNSW
(M 16, efConstruction 200, efSearch 128) found 0.96 of the exact top 10 this way and 0.87 as
an inner-product index.

ScaNN (`kind="scann"`) searches inner products as they are: it holds `[w_i, b_i]`, searched
with `[u, 1]`, in k-means partitions (each item also in a second, SOAR's spilling); the
`nprobe` partitions nearest a user are scanned with 4-bit codes, one per dimension, trained
with the anisotropic (score-aware) loss, and the `reorder` best of them are scored in float.
With 8 x sqrt(items) partitions, 240 scanned and 64 reordered, it found 0.965 of the exact
top 10 on the 1M-item catalog of bench/results/scale/ at 11.6x the users/s of exact ranking,
built in 57 s (HNSW, M 16, efSearch 256, on an earlier training of that model: 0.946 at
4.0x, built in 193 s).

Two files in the model folder: the index (`item_index.faiss`; `item_index.scann` for ScaNN,
an uncompressed tar of the searcher's files) and `item_index.json` (kind, parameters, the
fingerprint of the item vectors, recall@10 against exact ranking and how it was measured,
build seconds). An index whose fingerprint is not the model's is ignored with a warning.

Search fetches k + the history's item count candidates per user, drops the history items,
scores the rest exactly and keeps the best k; a row left with fewer than k (an IVF probe of
sparse clusters) is ranked exactly. faiss and ScaNN are imported only when an index is built
or read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lite_rec.errors import InputError
from lite_rec.outputs import write_file_atomically

if TYPE_CHECKING:
    from lite_rec.model import RecommendationLLM
    from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

INDEX_FILE = "item_index.faiss"  # hnsw and ivf
SCANN_FILE = "item_index.scann"  # scann: the searcher's files in one uncompressed tar
INDEX_INFO_FILE = "item_index.json"
INDEX_FILES = (INDEX_FILE, SCANN_FILE, INDEX_INFO_FILE)
# What a logged model holding an index file needs to read it.
INDEX_REQUIREMENTS = {INDEX_FILE: "faiss-cpu==1.15.1", SCANN_FILE: "scann==1.4.2"}
KINDS = ("hnsw", "ivf", "scann")
FORMAT_VERSION = 1
RECALL_K = 10
# Candidate scores gathered at a time: rows x fetched x width floats (64 MB).
CANDIDATE_FLOATS = 1 << 24
# Histories the transformer reads at a time when serving through the index, in order of
# length: each batch pads to its own longest, so short histories are not padded to the length
# of the longest among a candidate batch's 512.
USER_BATCH = 128
MODEL_FOLDER_FILES = ("model.pt", "model_config.json", "catalog.json")
# ScaNN: items its partitions and codes are trained on at most, and the dimensions a 4-bit
# code covers: one (16 levels per dimension); with two, the 1M-item catalog needed several
# times the reordering for less recall.
SCANN_TRAINING_ITEMS = 250_000
SCANN_DIMS_PER_CODE = 1
SCANN_ANISOTROPIC_THRESHOLD = 0.2  # ScaNN's recommended value for inner-product search
SCANN_SOAR_LAMBDA = 1.0  # a second partition per item, chosen orthogonal to the first's error


@dataclass
class IndexConfig:
    """How the index is built and searched; the defaults reached recall@10 >= 0.95 on the
    catalogs in docs/operations.md."""

    kind: str = "hnsw"  # hnsw | ivf | scann
    hnsw_m: int = 16  # graph neighbours per item
    ef_construction: int = 200  # candidates kept while linking an item into the graph
    ef_search: int = 256  # candidates kept while searching (at least the fetched count)
    nlist: int = 0  # IVF / ScaNN partitions (0: ivf 4 x sqrt(items), scann 8 x sqrt(items))
    nprobe: int = 0  # partitions searched per user (0: ivf nlist / 8, scann 240)
    reorder: int = 64  # ScaNN: candidates per user scored in float (at least the fetched count)

    def check(self) -> None:
        """Refuse, by name, settings no index can be built with."""
        if self.kind not in KINDS:
            raise ValueError(f"index kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "reorder"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"index {name}: expected a positive integer, got {getattr(self, name)}"
                )
        for name in ("nlist", "nprobe"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"index {name}: expected 0 (automatic) or more, got {getattr(self, name)}"
                )

    def params(self, n_items: int) -> dict[str, int]:
        """The parameters of this kind, automatic `nlist` and `nprobe` resolved for `n_items`."""
        if self.kind == "hnsw":
            return {
                "m": self.hnsw_m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
            }
        if self.kind == "scann":  # 240 of 8 sqrt(n) partitions: 30 sqrt(n) items scanned
            nlist = max(1, min(self.nlist or round(8 * np.sqrt(n_items)), n_items))
            nprobe = min(self.nprobe or 240, nlist)
            return {"nlist": nlist, "nprobe": nprobe, "reorder": self.reorder}
        nlist = max(1, min(self.nlist or round(4 * np.sqrt(n_items)), n_items))
        return {"nlist": nlist, "nprobe": min(self.nprobe or -(-nlist // 8), nlist)}


def index_file(kind: str) -> str:
    """The file of the model folder that holds an index of `kind`."""
    return SCANN_FILE if kind == "scann" else INDEX_FILE


def item_vectors(model: RecommendationLLM) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output vectors (n_items, d) and bias (n_items,) or None that scores are taken with."""
    with torch.inference_mode():
        weights, bias = model.output_weights(model.item_table())
    weights = weights.detach().float().contiguous()
    return weights, None if bias is None else bias.detach().float().contiguous()


def fingerprint(weights: torch.Tensor, bias: torch.Tensor | None) -> str:
    """A digest of the item vectors and bias: equal digests mean the same scores."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(tuple(weights.shape)).encode())
    digest.update(weights.cpu().numpy())
    if bias is not None:
        digest.update(bias.cpu().numpy())
    return digest.hexdigest()


def _faiss():
    """faiss, imported on first use (its loader logs each CPU build it tries at INFO)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def _scann():
    """ScaNN's searcher API, imported on first use."""
    from scann import scann_ops_pybind

    return scann_ops_pybind


def _index_vectors(weights: torch.Tensor, bias: torch.Tensor | None) -> np.ndarray:
    """Items as the index holds them: `[w, b, sqrt(R^2 - |w|^2 - b^2)]`. -> (n_items, d + 2)"""
    items = weights.cpu().numpy()
    extra = np.zeros((len(items), 2), dtype=np.float32)
    if bias is not None:
        extra[:, 0] = bias.cpu().numpy()
    squared = np.einsum("ij,ij->i", items, items) + extra[:, 0] ** 2  # (n_items,)
    extra[:, 1] = np.sqrt(np.maximum(squared.max() - squared, 0.0))
    return np.hstack([items, extra])


def _query_vectors(users: torch.Tensor) -> np.ndarray:
    """Users as the index is searched with: `[u, 1, 0]`. (B, d) -> (B, d + 2)"""
    users = users.float().cpu().numpy()
    extra = np.zeros((len(users), 2), dtype=np.float32)
    extra[:, 0] = 1.0
    return np.ascontiguousarray(np.hstack([users, extra]))


class ItemIndex:
    """A faiss index over a model's items and what `item_index.json` says of it."""

    def __init__(self, index: Any, info: dict[str, Any]):
        self.index = index
        self.info = info
        self.threads = 0  # scann: the thread count its searcher was last given

    @property
    def kind(self) -> str:
        return self.info["kind"]

    def candidates(self, users: torch.Tensor, fetch: int) -> np.ndarray:
        """The `fetch` items nearest each user, best first, -1 where the index found fewer.
        (B, d) -> (B, fetch) int64"""
        params = self.info["params"]
        queries = _query_vectors(users)[:, : self.info["dim"]]  # scann: [u, 1] or [u]
        if self.kind == "scann":
            if self.threads != torch.get_num_threads():  # serving's thread setting holds
                self.threads = torch.get_num_threads()
                self.index.set_num_threads(self.threads)
            items, scores = self.index.search_batched_parallel(
                queries, fetch, max(params["reorder"], fetch), params["nprobe"]
            )
            items = items.astype(np.int64)
            items[np.isnan(scores)] = -1  # ScaNN's mark of a missing neighbour
            return items
        faiss = _faiss()
        faiss.omp_set_num_threads(torch.get_num_threads())
        # Per call, not set on the index: concurrent searches never see each other's values.
        if self.kind == "hnsw":
            search = faiss.SearchParametersHNSW(efSearch=max(params["ef_search"], fetch))
        else:
            search = faiss.SearchParametersIVF(nprobe=params["nprobe"])
        _, items = self.index.search(queries, fetch, params=search)
        return items


def _new_index(vectors: np.ndarray, config: IndexConfig, params: dict[str, int]) -> Any:
    """The index of `config.kind` holding `vectors`."""
    if config.kind == "scann":
        return _new_scann(vectors, params)
    faiss = _faiss()
    width = vectors.shape[1]
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(width, params["m"], faiss.METRIC_L2)
        index.hnsw.efConstruction = params["ef_construction"]
    else:
        quantizer = faiss.IndexFlatL2(width)
        index = faiss.IndexIVFFlat(quantizer, width, params["nlist"], faiss.METRIC_L2)
        index.cp.min_points_per_centroid = 1  # a catalog smaller than 39 x nlist is fine
        index.train(vectors)
    index.add(vectors)
    return index


def _new_scann(vectors: np.ndarray, params: dict[str, int]) -> Any:
    """A ScaNN searcher of `vectors` by inner product: k-means partitions with SOAR spilling,
    anisotropic 4-bit codes, float rescoring of the best `reorder`."""
    sample = min(len(vectors), SCANN_TRAINING_ITEMS)
    builder = _scann().builder(vectors, RECALL_K, "dot_product")
    builder = builder.tree(
        num_leaves=params["nlist"],
        num_leaves_to_search=params["nprobe"],
        training_sample_size=sample,
        min_partition_size=1,  # a small catalog is fine
        soar_lambda=SCANN_SOAR_LAMBDA,
        overretrieve_factor=2.0,
    )
    builder = builder.score_ah(
        SCANN_DIMS_PER_CODE,
        anisotropic_quantization_threshold=SCANN_ANISOTROPIC_THRESHOLD,
        training_sample_size=sample,
    )
    builder.reorder(params["reorder"]).set_n_training_threads(torch.get_num_threads())
    return builder.build()


def build_index(
    model: RecommendationLLM,
    config: IndexConfig,
    histories: Sequence[np.ndarray] | None = None,
    popularity: np.ndarray | None = None,
    sample_users: int = 1000,
    seed: int = 0,
) -> ItemIndex:
    """An index of the model's items, with its recall@10 against exact ranking measured on
    `sample_users` of `histories` (item indices, oldest first) or, without them, on random
    histories drawn by `popularity` (uniform when None)."""
    config.check()
    weights, bias = item_vectors(model)
    params = config.params(model.n_items)
    started = time.perf_counter()
    vectors = _index_vectors(weights, bias)
    if config.kind == "scann":  # inner products as they are: [w, b], or [w] without a bias
        vectors = np.ascontiguousarray(vectors[:, : weights.shape[1] + (bias is not None)])
    index = _new_index(vectors, config, params)
    seconds = time.perf_counter() - started
    info = {
        "format_version": FORMAT_VERSION,
        "kind": config.kind,
        "params": params,
        "n_items": model.n_items,
        "dim": int(vectors.shape[1]),
        "fingerprint": fingerprint(weights, bias),
        "build_seconds": round(seconds, 3),
    }
    item_index = ItemIndex(index, info)
    rng = np.random.default_rng(seed)
    if histories is None:
        queries = random_histories(
            model.n_items, model.config.max_len, popularity, sample_users, rng
        )
        source = "random histories" + (
            " drawn by training popularity" if popularity is not None else ""
        )
    else:
        chosen = np.sort(rng.permutation(len(histories))[:sample_users])
        queries, source = [histories[user] for user in chosen], "validation histories"
    info |= measure_recall(model, item_index, queries)
    info["recall_queries"] = source
    return item_index


def random_histories(
    n_items: int,
    max_len: int,
    popularity: np.ndarray | None,
    count: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """`count` histories of 1 to `max_len` draws of items, each drawn with probability
    proportional to `popularity` plus one (uniformly when None); repeats are dropped."""
    weights = None
    if popularity is not None:
        weights = np.asarray(popularity, dtype=np.float64) + 1.0
        weights /= weights.sum()
    lengths = rng.integers(1, max_len + 1, size=count)
    draws = rng.choice(n_items, size=int(lengths.sum()), p=weights)
    histories = []
    for drawn in np.split(draws, np.cumsum(lengths)[:-1]):
        _, first = np.unique(drawn, return_index=True)
        histories.append(drawn[np.sort(first)])  # oldest first, each item once
    return histories


def measure_recall(
    model: RecommendationLLM,
    index: ItemIndex,
    histories: Sequence[np.ndarray],
    k: int = RECALL_K,
    runs: int = 3,
) -> dict[str, Any]:
    """recall@k of the index against exact ranking (the share of each user's exact top k
    that the index returns, averaged) on the last `max_len` items of each history, and the
    users per second of each: the median of `runs` runs, exact and index taking turns."""
    from lite_rec.evaluate import recommend as exact_recommend

    window = model.config.max_len
    histories = [np.asarray(history, dtype=np.int64)[-window:] for history in histories]
    exact_seconds, index_seconds = [], []
    for _ in range(runs):
        started = time.perf_counter()
        exact, exact_scores = exact_recommend(model, histories, k)
        exact_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        found, _ = recommend(model, index, histories, k)
        index_seconds.append(time.perf_counter() - started)
    shares = []
    for row in range(len(histories)):
        wanted = exact[row][~np.isneginf(exact_scores[row])]
        if len(wanted):
            shares.append(len(np.intersect1d(wanted, found[row])) / len(wanted))
    return {
        f"recall@{k}": round(float(np.mean(shares)), 4) if shares else 1.0,
        "recall_k": k,
        "recall_users": len(histories),
        "exact_users_per_second": _per_second(len(histories), exact_seconds),
        "index_users_per_second": _per_second(len(histories), index_seconds),
    }


def _per_second(users: int, seconds: list[float]) -> float:
    """Users per second of the median run, as a plain float (Dagster metadata takes no numpy)."""
    return round(users / max(float(np.median(seconds)), 1e-9), 1)


def _fetch_batches(fetch: np.ndarray, batch_size: int, width: int) -> list[np.ndarray]:
    """Batches of user positions in order of fetch size, each of at most `batch_size` users
    and about `CANDIDATE_FLOATS` gathered candidate floats."""
    order = np.argsort(fetch, kind="stable")
    batches, start = [], 0
    while start < len(order):
        widest = int(fetch[order[min(start + batch_size, len(order)) - 1]])  # sorted: the last
        rows = max(1, min(batch_size, CANDIDATE_FLOATS // (widest * width)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


@torch.inference_mode()
def recommend(
    model: RecommendationLLM,
    index: ItemIndex,
    histories: Sequence[np.ndarray],
    k: int = 10,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and their exact scores per history (item indices, oldest first),
    best first (equal scores: lower index first), no history item among them: the contract
    of `lite_rec.evaluate.recommend` for a list of histories, found through the index.
    -> (B, k), (B, k); k is capped at the catalog size, as there."""
    from lite_rec.evaluate import recommend as exact_recommend

    n_items, k = model.n_items, min(k, model.n_items)
    histories = [np.asarray(history, dtype=np.int64) for history in histories]
    seen = [np.unique(history) for history in histories]  # what each row may not get back
    weights, bias = item_vectors(model)
    top_items = np.zeros((len(histories), k), dtype=np.int64)
    top_scores = np.zeros((len(histories), k), dtype=np.float32)
    fetch = np.minimum([k + len(items) for items in seen], n_items)
    short = []  # rows the index left with fewer than k candidates
    for users in _fetch_batches(fetch, batch_size, weights.shape[1]):
        vectors = _user_vectors(model, [histories[u] for u in users])  # (b, d)
        candidates = index.candidates(vectors, int(fetch[users].max()))  # (b, f)
        items, scores = _exact_best(vectors, weights, bias, candidates, [seen[u] for u in users], k)
        top_items[users], top_scores[users] = items, scores
        short += users[np.isneginf(scores[:, -1])].tolist()
    if short:
        log.debug(
            "%d of %d users ranked exactly: the index found fewer than k items",
            len(short),
            len(histories),
        )
        items, scores = exact_recommend(model, [histories[u] for u in short], k)
        top_items[short], top_scores[short] = items, scores
    return top_items, top_scores


def _user_vectors(model: RecommendationLLM, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """`model.user_vectors` of `histories` (in order of length, as `_fetch_batches` sorts
    them) read USER_BATCH at a time: a short history pads to fewer positions. -> (B, d)"""
    parts = range(0, len(histories), USER_BATCH)
    return torch.cat([model.user_vectors(histories[at : at + USER_BATCH]) for at in parts])


def _exact_best(
    users: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    candidates: np.ndarray,
    seen: list[np.ndarray],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row's candidates by exact score; the row's `seen` items and missing
    (-1) candidates score -inf. (b, d), (b, f) -> (b, k) items, (b, k) scores"""
    n_items = len(weights)
    rows = np.repeat(np.arange(len(seen)), [len(items) for items in seen])
    seen = rows * n_items + np.concatenate([np.zeros(0, np.int64), *seen])
    cells = np.arange(len(candidates))[:, None] * n_items + candidates  # (b, f)
    dropped = (candidates < 0) | np.isin(cells, seen)
    safe = torch.from_numpy(np.where(dropped, 0, candidates))
    scores = torch.bmm(weights[safe], users.float().unsqueeze(2)).squeeze(2)  # (b, f)
    if bias is not None:
        scores += bias[safe]
    scores = scores.numpy()
    scores[dropped] = -np.inf
    order = np.lexsort((candidates, -scores), axis=1)[:, :k]  # score descending, then index
    items = np.take_along_axis(candidates, order, 1)
    scores = np.take_along_axis(scores, order, 1)
    if scores.shape[1] < k:  # fewer candidates than k: the rest of the row is missing
        missing = k - scores.shape[1]
        items = np.pad(items, ((0, 0), (0, missing)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    return items, scores


def check_model_folder(model_dir: str | Path) -> Path:
    """`model_dir` when it holds what `lite-rec train` writes for serving, else InputError."""
    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FOLDER_FILES if not (model_dir / name).is_file()]
    if missing:
        raise InputError(
            model_dir,
            f"expected a model folder `lite-rec train` wrote; it lacks {', '.join(missing)}",
        )
    return model_dir


def save_index(index: ItemIndex, model_dir: str | Path) -> None:
    """The index file of its kind, then `item_index.json`, each written to a temporary sibling
    and renamed over the old one; an index file of the other kind goes."""
    model_dir = Path(model_dir)
    name = index_file(index.kind)
    temporary = model_dir / f".{name}.tmp"
    try:
        if index.kind == "scann":
            _write_scann(index.index, temporary)
        else:
            _faiss().write_index(index.index, str(temporary))
        os.replace(temporary, model_dir / name)
    finally:
        temporary.unlink(missing_ok=True)
    for other in {INDEX_FILE, SCANN_FILE} - {name}:
        (model_dir / other).unlink(missing_ok=True)
    write_file_atomically(model_dir / INDEX_INFO_FILE, json.dumps(index.info, indent=2) + "\n")


def _write_scann(searcher: Any, path: Path) -> None:
    """The files ScaNN serialises `searcher` into, as one uncompressed tar at `path`."""
    with tempfile.TemporaryDirectory() as folder, tarfile.open(path, "w") as tar:
        searcher.serialize(folder, relative_path=True)
        for file in sorted(Path(folder).iterdir()):
            tar.add(file, arcname=file.name)


def _read_scann(path: Path) -> Any:
    """The ScaNN searcher `_write_scann` wrote to `path`."""
    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(path) as tar:
            tar.extractall(folder, filter="data")
        return _scann().load_searcher(folder)


def load_index(model_dir: str | Path, model: RecommendationLLM) -> ItemIndex | None:
    """The index in `model_dir` when it was built for `model`'s item vectors; None, with a
    warning saying why, when it is stale or unreadable; None when there is none."""
    model_dir = Path(model_dir)
    if not any((model_dir / name).exists() for name in INDEX_FILES):
        return None
    problem = _index_problem(model_dir, model)
    if problem is None:
        info = json.loads((model_dir / INDEX_INFO_FILE).read_text())
        path = model_dir / index_file(info["kind"])
        try:
            if info["kind"] == "scann":
                index = _read_scann(path)
            else:
                index = _faiss().read_index(str(path))
        # faiss's and ScaNN's errors for a file they cannot parse, tarfile's for a broken tar
        except (RuntimeError, ValueError, OSError, tarfile.TarError) as error:
            problem = f"{path.name} is unreadable ({str(error).strip().splitlines()[0]})"
        else:
            problem = _file_problem(index, info)
            if problem is None:
                return ItemIndex(index, info)
    log.warning(
        "ignoring the item index in %s: %s; rebuild it with `lite-rec index %s`",
        model_dir,
        problem,
        model_dir,
    )
    return None


def _index_problem(model_dir: Path, model: RecommendationLLM) -> str | None:
    """Why `item_index.json` does not describe an index of `model`, or None."""
    info_path = model_dir / INDEX_INFO_FILE
    if not info_path.is_file():
        present = next(name for name in INDEX_FILES if (model_dir / name).exists())
        return f"expected both {present} and {INDEX_INFO_FILE}"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as error:
        return f"{INDEX_INFO_FILE} is unreadable ({error})"
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        return f"{INDEX_INFO_FILE} is not format_version {FORMAT_VERSION}"
    if info.get("kind") not in KINDS:
        return f"{INDEX_INFO_FILE} names kind {info.get('kind')!r}, not one of {', '.join(KINDS)}"
    if not (model_dir / index_file(info["kind"])).is_file():
        return f"expected both {index_file(info['kind'])} and {INDEX_INFO_FILE}"
    if info.get("n_items") != model.n_items:
        return f"it holds {info.get('n_items')} items, the model {model.n_items}"
    if info.get("fingerprint") != fingerprint(*item_vectors(model)):
        return "it was built for other item vectors (the model was retrained since)"
    return None


def _file_problem(index: Any, info: dict[str, Any]) -> str | None:
    """Why the index read does not match its description, or None."""
    described = f"the {info['kind']} index of {info['n_items']} items {INDEX_INFO_FILE} describes"
    if info["kind"] == "scann":
        if index.size() != info["n_items"]:
            return f"{SCANN_FILE} ({index.size()} items) is not {described}"
        return None
    faiss = _faiss()
    classes = {"hnsw": faiss.IndexHNSW, "ivf": faiss.IndexIVF}
    kind = next((name for name, cls in classes.items() if isinstance(index, cls)), "other")
    if kind != info["kind"] or index.ntotal != info["n_items"] or index.d != info.get("dim"):
        return f"{INDEX_FILE} ({kind}, {index.ntotal} items) is not {described}"
    return None


def index_model_folder(
    model_dir: str | Path,
    config: IndexConfig,
    data: SequenceData | None = None,
    sample_users: int = 1000,
) -> dict[str, Any]:
    """Build the index of the model in `model_dir`, measure its recall on `data`'s validation
    histories (random popular histories without data), write it into the folder and return
    what `item_index.json` says."""
    from lite_rec.model_io import load_model

    model_dir = check_model_folder(model_dir)
    config.check()
    if sample_users < 1:
        raise ValueError(f"sample_users: expected a positive user count, got {sample_users}")
    catalog = json.loads((model_dir / "catalog.json").read_text())
    histories = None
    if data is not None:
        if list(catalog["item_ids"]) != [str(item) for item in data.item_ids]:
            raise InputError(
                model_dir / "catalog.json",
                f"expected the item catalog of the data ({data.n_items} items); the model was "
                f"trained on another ({len(catalog['item_ids'])} items)",
            )
        histories, _ = data.histories_and_targets("valid")
    model = load_model(model_dir)
    popularity = np.asarray(catalog["train_counts"], dtype=np.float64)
    index = build_index(model, config, histories, popularity, sample_users)
    save_index(index, model_dir)
    log.info(
        "%s index of %d items in %s, built in %.1f s: recall@%d %.4f vs exact on %d users (%s)",
        index.kind,
        model.n_items,
        model_dir,
        index.info["build_seconds"],
        RECALL_K,
        index.info[f"recall@{RECALL_K}"],
        index.info["recall_users"],
        index.info["recall_queries"],
    )
    return index.info
