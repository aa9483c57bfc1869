"""`lite-rec bench scale`: how each stage's time and memory grow with the catalog, measured on
synthetic data (`lite_rec.synth`) of ITEMS items, USERS_PER_ITEM x as many users and
INTERACTIONS_PER_ITEM x as many interactions.

Per size, each stage runs in a fresh process, so its peak RSS is its own:
- prepare: `prepare --engine duckdb`, and pandas up to `pandas_max_items`;
- embed: MiniLM (the Item LLM) encoding the titles of the first `embed_sample` items, items/s
  with the model already loaded;
- train: `train_steps` optimizer steps of the large recipe (sampled loss) on the data's
  training windows, as the trainer takes them, and up to `full_max_items` the full loss for a
  few steps; the sampled model is saved for the stages below;
- evaluate: exact top-10 of `eval_users` test users with `rank_catalog` in item chunks
  (users/s), and their test NDCG@10 / HR@10 against training popularity;
- ann: the `lite-rec index` build (`index_model_folder`), its recall@10 against exact
  ranking and both users/s, measured in one process taking turns.

The model holds item ids (`model.item_repr=id`): encoding a million titles is the embed
column's rate times the catalog. Data and models go to `work_dir`, outside the repository.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lite_rec.bench.report import machine_line, markdown_table
from lite_rec.bench.run import machine, output_folder, write_results
from lite_rec.config import Config, ItemLLMConfig, load_config
from lite_rec.recipe import resolve_config

log = logging.getLogger(__name__)

SIZES = [10_000, 100_000, 1_000_000]
USERS_PER_ITEM = 2
INTERACTIONS_PER_ITEM = 20
STAGES = ("prepare", "embed", "train", "evaluate", "ann")
MODEL_CHANGES = ["model.item_repr=id"]
SAMPLED_CHANGES = ["train.recipe=large"]
FULL_CHANGES = ["train.recipe=none"]
WARMUP_STEPS = 2  # steps left out of the timing: the first ones allocate
PLOT_FILE = "scale.png"


@dataclass
class ScaleSettings:
    """What each stage measures; the defaults are those of the README table."""

    train_steps: int = 1000  # sampled-loss steps, timed and kept for the evaluation
    full_steps: int = 20  # full-loss steps at most ...
    full_seconds: float = 120.0  # ... or this many timed seconds, whichever comes first
    full_max_items: int = 100_000  # the full loss is measured up to this catalog
    pandas_max_items: int = 100_000  # prepare with pandas up to this catalog
    embed_sample: int = 20_000  # items whose titles MiniLM encodes
    eval_users: int = 4_000  # test users ranked exactly
    item_chunk: int | None = None  # items scored at a time by the exact ranking (None: its own)
    ann_users: int = 1_000  # validation users the index's recall is measured on
    ann_kind: str = "hnsw"
    # `lite-rec index` settings by IndexConfig field (hnsw_m, ef_search, nlist, nprobe, ...);
    # a setting left out keeps its default.
    ann_index: dict[str, int] = field(default_factory=dict)
    seed: int = 0  # of the synthetic data and the user samples
    changes: list[str] = field(default_factory=list)  # `--set` on top of the model's


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log_to_stderr() -> None:
    """A stage process's logging, as the parent's: progress lines of long stages."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def synth_stage(items: int, raw_dir: Path, seed: int) -> dict[str, Any]:
    """The synthetic dataset of `items` items, written unless `raw_dir` holds it already."""
    from lite_rec.synth import PARAMETERS_FILE, SynthConfig, write_synthetic

    config = SynthConfig(USERS_PER_ITEM * items, items, INTERACTIONS_PER_ITEM * items, seed)
    written = raw_dir / PARAMETERS_FILE
    if written.is_file() and json.loads(written.read_text())["config"] == asdict(config):
        return {"cached": True}
    started = time.perf_counter()
    write_synthetic(config, raw_dir, progress=False)
    return {"cached": False, "seconds": time.perf_counter() - started, **_rss()}


def _rss() -> dict[str, float]:
    """The stage's peak RSS and the machine's load as it ends (other jobs slow a cell)."""
    return {"peak_rss_mib": _peak_rss_mib(), "load_average": os.getloadavg()[0]}


def prepare_stage(raw_dir: Path, data_dir: Path | None, engine: str) -> dict[str, Any]:
    """`lite-rec prepare --engine ENGINE` into `data_dir` (None: a temporary folder)."""
    from lite_rec.prepare import prepare

    with tempfile.TemporaryDirectory(dir=raw_dir.parent) as scratch:
        started = time.perf_counter()
        processed = prepare(raw_dir, data_dir or Path(scratch) / "data", "auto", 5, engine)
        seconds = time.perf_counter() - started
    return {"engine": engine, "seconds": seconds, "stats": processed.stats, **_rss()}


def embed_stage(data_dir: Path, config: ItemLLMConfig, sample: int) -> dict[str, Any]:
    """MiniLM over the titles of the first `sample` items: items/s once the model is loaded."""
    import pandas as pd

    from lite_rec.item_embeddings import ItemEncoder, item_text
    from lite_rec.sequences import ITEMS_FILE

    texts = item_text(pd.read_parquet(data_dir / ITEMS_FILE).head(sample), config.template)
    started = time.perf_counter()
    encoder = ItemEncoder(config.model, config.pooling, config.max_length, config.normalize)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    encoder.encode(texts, config.batch_size, progress=False)
    seconds = time.perf_counter() - started
    return {
        "items": len(texts),
        "load_seconds": load_seconds,
        "seconds": seconds,
        "items_per_second": len(texts) / seconds,
        **_rss(),
    }


def _windows(sequences: list[np.ndarray], config, max_len: int):
    """Training batches as the trainer reads them, epoch after epoch."""
    from lite_rec.sequences import epoch_batches

    epoch = 1
    while True:
        yield from epoch_batches(sequences, config, max_len, epoch)
        epoch += 1


def train_stage(
    data_dir: Path, config: Config, steps: int, seconds: float, model_dir: Path | None
) -> dict[str, Any]:
    """Up to `steps` optimizer steps of `config` on the data's training windows (fewer once
    `seconds` have been timed), the first WARMUP_STEPS untimed; the model is saved to
    `model_dir` (with its catalog) when given. -> seconds per 1,000 steps and the losses"""
    from lite_rec.model import RecommendationLLM
    from lite_rec.model_io import save_model
    from lite_rec.sequences import load_sequences
    from lite_rec.serving import write_catalog
    from lite_rec.train import (
        negative_sampler,
        parameter_groups,
        set_sparse_id_gradients,
        training_loss,
    )
    from lite_rec.trainer import adamw_with_warmup, optimizer_step, seed_everything

    model_config, train_config = config.model, config.train
    started = time.perf_counter()
    data = load_sequences(data_dir)
    load_seconds = time.perf_counter() - started
    seed_everything(train_config.seed)
    model = RecommendationLLM(model_config, data.n_items, None).train()
    set_sparse_id_gradients(model, train_config)
    optimizer, scheduler = adamw_with_warmup(parameter_groups(model, train_config), train_config)
    sequences = data.train_sequences()
    sampler = negative_sampler(train_config, data.n_items, sequences)
    losses, timed = [], []
    batches = _windows(sequences, train_config, model_config.max_len)
    for step in range(steps):
        began = time.perf_counter()
        loss = training_loss(model, next(batches), train_config, sampler)
        losses.append(optimizer_step(model, optimizer, scheduler, loss, train_config))
        if step >= WARMUP_STEPS:
            timed.append(time.perf_counter() - began)
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("%s loss, step %d of %d: %.4f", train_config.loss, step + 1, steps, losses[-1])
        if sum(timed) >= seconds:
            break
    if model_dir is not None:
        model_dir.mkdir(parents=True, exist_ok=True)
        save_model(model.eval(), model_dir)
        write_catalog(data, model_dir)
    window = max(1, len(losses) // 10)
    return {
        "loss": train_config.loss,
        "steps": len(losses),
        "timed_steps": len(timed),
        "seconds_per_1000_steps": 1000 * float(np.mean(timed)) if timed else None,
        "load_seconds": load_seconds,
        "first_loss": float(np.mean(losses[:window])),
        "last_loss": float(np.mean(losses[-window:])),
        **_rss(),
    }


class PopularityScores(nn.Module):
    """Training popularity as a model `rank_catalog` reads: every user scores item i by its
    count in the training sequences."""

    def __init__(self, counts: np.ndarray):
        super().__init__()
        self.counts = torch.as_tensor(counts, dtype=torch.float32)  # (n_items,)
        self.n_items = len(counts)

    def user_vectors(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.ones(len(histories), 1)  # (B, 1)

    def item_scores(self, users: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return users * self.counts[start:stop]  # (B, stop - start)


def _chunk_words(item_chunk: int | None) -> str:
    if item_chunk is None:
        return "the item chunk rank_catalog picks (2,048 items beyond 4M scores per batch)"
    return f"{item_chunk:,} items at a time"


def evaluate_stage(
    data_dir: Path, model_dir: Path, users: int, item_chunk: int | None, seed: int
) -> dict[str, Any]:
    """Exact top-10 of `users` sampled test users (users/s), then their test metrics for the
    model and for training popularity."""
    from lite_rec.metrics import ranking_metrics
    from lite_rec.model_io import load_model
    from lite_rec.ranking import rank_catalog
    from lite_rec.sequences import load_sequences

    data = load_sequences(data_dir)
    model = load_model(model_dir)
    histories, targets = data.histories_and_targets("test")
    chosen = np.sort(np.random.default_rng(seed).permutation(len(histories))[:users])
    histories, targets = [histories[u] for u in chosen], targets[chosen]
    started = time.perf_counter()
    rank_catalog(model, histories, k=10, item_chunk=item_chunk)
    seconds = time.perf_counter() - started
    counts = np.bincount(np.concatenate(data.train_sequences()), minlength=data.n_items)
    metrics = {}
    for name, scorer in (("model", model), ("popularity", PopularityScores(counts))):
        ranks = rank_catalog(scorer, histories, targets, item_chunk=item_chunk).ranks
        found = ranking_metrics(ranks)
        metrics[name] = {"ndcg@10": found["ndcg@10"], "hr@10": found["recall@10"]}
    return {
        "users": len(histories),
        "item_chunk": item_chunk,
        "seconds": seconds,
        "users_per_second": len(histories) / seconds,
        "test": metrics,
        **_rss(),
    }


def ann_stage(
    data_dir: Path, model_dir: Path, kind: str, users: int, index_settings: dict[str, int]
) -> dict[str, Any]:
    """`lite-rec index MODEL_DIR --data DATA_DIR --kind KIND --sample-users USERS`, with
    `index_settings` (`{"nprobe": 16}`: `--nprobe 16`)."""
    from lite_rec.ann import IndexConfig, index_model_folder
    from lite_rec.sequences import load_sequences

    config = IndexConfig(kind=kind, **index_settings)
    info = index_model_folder(model_dir, config, load_sequences(data_dir), users)
    keys = ("kind", "params", "build_seconds", "recall@10", "recall_users")
    keys += ("exact_users_per_second", "index_users_per_second")
    row = {key: info[key] for key in keys}
    row["speedup"] = info["index_users_per_second"] / info["exact_users_per_second"]
    return {**row, **_rss()}


def _in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`function(*args)` in a new process; a failure (a raised error, a killed process)
    becomes the row's `error`."""
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(1, mp_context=context, initializer=_log_to_stderr) as pool:
            row = pool.submit(function, *args).result()
    except Exception as error:  # the row records it; the other stages still run
        log.error("%s failed: %s", function.__name__, error)
        row = {"error": f"{type(error).__name__}: {error}"}
    row["wall_seconds"] = time.perf_counter() - started
    return row


def stage_configs(settings: ScaleSettings, params: str | Path | None) -> dict[str, Config]:
    """The sampled-loss (large recipe) and full-loss configs of the item-id model."""
    recipes = {"sampled": SAMPLED_CHANGES, "full": FULL_CHANGES}
    configs = {
        loss: load_config(params, [*MODEL_CHANGES, *recipe, *settings.changes])
        for loss, recipe in recipes.items()
    }
    # The recipes are named: resolving them needs no data.
    return {loss: resolve_config(config, None) for loss, config in configs.items()}


def _size_stages(
    items: int, stages: Sequence[str], work: Path, settings: ScaleSettings, configs
) -> dict[str, Callable[[], dict[str, Any]]]:
    """The measurements of one catalog size, by result name, in the order they run."""
    folder = work / f"items_{items}"
    raw, data, model = folder / "raw", folder / "data", folder / "model"
    sampled, full = configs["sampled"], configs["full"]
    todo: dict[str, Callable[[], dict[str, Any]]] = {}
    if "prepare" in stages:
        todo["synth"] = lambda: _in_fresh_process(synth_stage, items, raw, settings.seed)
        todo["prepare_duckdb"] = lambda: _in_fresh_process(prepare_stage, raw, data, "duckdb")
        if items <= settings.pandas_max_items:
            todo["prepare_pandas"] = lambda: _in_fresh_process(prepare_stage, raw, None, "pandas")
    if "embed" in stages:
        sample = settings.embed_sample
        todo["embed"] = lambda: _in_fresh_process(embed_stage, data, sampled.item_llm, sample)
    if "train" in stages:
        steps = settings.train_steps
        todo["train_sampled"] = lambda: _in_fresh_process(
            train_stage, data, sampled, steps, float("inf"), model
        )
        if items <= settings.full_max_items:
            todo["train_full"] = lambda: _in_fresh_process(
                train_stage, data, full, settings.full_steps, settings.full_seconds, None
            )
    if "evaluate" in stages:
        todo["evaluate"] = lambda: _in_fresh_process(
            evaluate_stage, data, model, settings.eval_users, settings.item_chunk, settings.seed
        )
    if "ann" in stages:
        todo["ann"] = lambda: _in_fresh_process(
            ann_stage, data, model, settings.ann_kind, settings.ann_users, settings.ann_index
        )
    return todo


def run_scale(
    sizes: Sequence[int],
    out_dir: str | Path,
    work_dir: str | Path,
    settings: ScaleSettings | None = None,
    stages: Sequence[str] = STAGES,
    params: str | Path | None = None,
    command: str = "lite-rec bench scale",
) -> dict[str, Any]:
    """Every stage of `stages` at every catalog size, each in a fresh process, the report
    rewritten in `out_dir` after each one. Rows of sizes and stages not rerun are kept from
    an earlier results.json in `out_dir`. -> the results (`rows`: one per size)"""
    settings = settings or ScaleSettings()
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--stages: expected some of {', '.join(STAGES)}, got {unknown}")
    out_dir, work_dir = output_folder(out_dir), Path(work_dir)
    configs = stage_configs(settings, params)
    earlier = out_dir / "results.json"
    rows = json.loads(earlier.read_text())["rows"] if earlier.is_file() else []
    results = {
        "command": command,
        "machine": machine(),
        "settings": asdict(settings),
        "configs": {loss: config.to_dict() for loss, config in configs.items()},
        "rows": rows,
    }
    for items in sizes:
        row = next((row for row in rows if row["items"] == items), None)
        if row is None:
            row = {"items": items, "users": USERS_PER_ITEM * items, "stages": {}}
            row["interactions"] = INTERACTIONS_PER_ITEM * items
            rows.append(row)
            rows.sort(key=lambda row: row["items"])
        for name, measure in _size_stages(items, stages, work_dir, settings, configs).items():
            log.info("scale %s items: %s", f"{items:,}", name)
            row["stages"][name] = {**measure(), "command": command}
            log.info("scale %s items: %s %s", f"{items:,}", name, row["stages"][name])
            write_scale_report(out_dir, results)
    return results


def write_scale_report(out_dir: Path, results: dict[str, Any]) -> None:
    write_results(out_dir, results, scale_markdown(results))
    plot_scale(results, out_dir / PLOT_FILE)


def _value(row: dict[str, Any], stage: str, *keys: str) -> Any:
    """row's stages[stage][keys...], None where it was not measured (or failed)."""
    value: Any = row["stages"].get(stage)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / 1024


COST_COLUMNS = [
    ("prepare duckdb s", "prepare_duckdb", ("seconds",)),
    ("duckdb GiB", "prepare_duckdb", ("peak_rss_mib",)),
    ("prepare pandas s", "prepare_pandas", ("seconds",)),
    ("pandas GiB", "prepare_pandas", ("peak_rss_mib",)),
    ("embed items/s", "embed", ("items_per_second",)),
    ("sampled s/1k steps", "train_sampled", ("seconds_per_1000_steps",)),
    ("sampled GiB", "train_sampled", ("peak_rss_mib",)),
    ("full s/1k steps", "train_full", ("seconds_per_1000_steps",)),
    ("full GiB", "train_full", ("peak_rss_mib",)),
]
SERVE_COLUMNS = [
    ("model's steps", "train_sampled", ("steps",)),
    ("exact users/s", "evaluate", ("users_per_second",)),
    ("exact GiB", "evaluate", ("peak_rss_mib",)),
    ("ANN build s", "ann", ("build_seconds",)),
    ("ANN kind", "ann", ("kind",)),
    ("ANN parameters", "ann", ("params",)),
    ("ANN recall@10", "ann", ("recall@10",)),
    ("ANN users/s", "ann", ("index_users_per_second",)),
    ("its exact users/s", "ann", ("exact_users_per_second",)),
    ("ANN speed-up", "ann", ("speedup",)),
    ("ANN GiB", "ann", ("peak_rss_mib",)),
    ("model NDCG@10", "evaluate", ("test", "model", "ndcg@10")),
    ("popularity NDCG@10", "evaluate", ("test", "popularity", "ndcg@10")),
    ("model HR@10", "evaluate", ("test", "model", "hr@10")),
    ("popularity HR@10", "evaluate", ("test", "popularity", "hr@10")),
]


def _cell(name: str, value: Any) -> Any:
    """A table cell: GiB from MiB, an index's parameters as `name value` pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {number}" for key, number in value.items())
    return _gib(value) if name.endswith("GiB") else value


def _table(rows: list[dict[str, Any]], columns) -> list[str]:
    cells = [
        [row["items"], row["interactions"], _value(row, "prepare_duckdb", "stats", "items")]
        + [_cell(name, _value(row, stage, *keys)) for name, stage, keys in columns]
        for row in rows
    ]
    names = ["items", "interactions", "items after 5-core", *(name for name, _, _ in columns)]
    return markdown_table(names, cells)


def scale_markdown(results: dict[str, Any]) -> str:
    """The two tables (cost of building; cost of serving and accuracy), the settings and any
    failed cell."""
    settings, rows = results["settings"], results["rows"]
    batch_size = results["configs"]["sampled"]["train"]["batch_size"]
    lines = ["# Growth with the catalog", "", f"{machine_line(results)}.", ""]
    commands = {cell["command"] for row in rows for cell in row["stages"].values()}
    if commands - {results["command"]}:
        lines += ["The cells were measured by:", "", *[f"- `{c}`" for c in sorted(commands)], ""]
    lines += [
        f"Synthetic data: {USERS_PER_ITEM} users and {INTERACTIONS_PER_ITEM} interactions per "
        f"item (`lite-rec synth`, seed {settings['seed']}). Each cell is one fresh process; "
        "GiB is its peak RSS. `-`: not measured.",
        "",
        "## Building: prepare, item embeddings, training",
        "",
        *_table(rows, COST_COLUMNS),
        "",
        f"embed: MiniLM over the titles of {settings['embed_sample']:,} items, model loaded. "
        "Training: item ids, the steps the next table names of the large recipe (sampled "
        f"loss), and up to {settings['full_max_items']:,} items the full loss for at most "
        f"{settings['full_steps']} steps or {settings['full_seconds']:g} s; the mean step "
        f"after {WARMUP_STEPS} untimed ones, x 1,000.",
        "",
        "## Serving and accuracy",
        "",
        *_table(rows, SERVE_COLUMNS),
        "",
        f"exact: `rank_catalog` top-10 of {settings['eval_users']:,} test users, "
        f"{_chunk_words(settings['item_chunk'])}. ANN: `lite-rec index --kind KIND`, recall@10 "
        f"against exact ranking on {settings['ann_users']:,} validation users, "
        "both users/s in that process, taking turns (its exact: `rank_catalog` with its own "
        "item chunk, as `lite-rec recommend --exact`). NDCG@10 / HR@10: the same test users, "
        "the model after its training steps "
        f"(batches of {batch_size} windows) against training popularity.",
    ]
    failed = [
        f"- {row['items']:,} items, {stage}: {cell['error']}"
        for row in rows
        for stage, cell in row["stages"].items()
        if "error" in cell
    ]
    if failed:
        lines += ["", "Failed cells:", "", *failed]
    return "\n".join(lines) + "\n"


PLOTTED = {
    "seconds": [
        ("prepare duckdb s", "prepare_duckdb", ("seconds",)),
        ("prepare pandas s", "prepare_pandas", ("seconds",)),
        ("sampled s / 1k steps", "train_sampled", ("seconds_per_1000_steps",)),
        ("full s / 1k steps", "train_full", ("seconds_per_1000_steps",)),
        ("ANN build s", "ann", ("build_seconds",)),
    ],
    "per second": [
        ("embed items/s", "embed", ("items_per_second",)),
        ("exact top-10 users/s", "evaluate", ("users_per_second",)),
        ("ANN users/s", "ann", ("index_users_per_second",)),
    ],
    "peak RSS GiB": [
        ("prepare duckdb", "prepare_duckdb", ("peak_rss_mib",)),
        ("train sampled", "train_sampled", ("peak_rss_mib",)),
        ("evaluate", "evaluate", ("peak_rss_mib",)),
        ("ANN", "ann", ("peak_rss_mib",)),
    ],
}


def plot_scale(results: dict[str, Any], path: str | Path) -> Path:
    """Seconds, throughputs and peak RSS against the catalog size, log-log."""
    from lite_rec.plots import plt

    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(5 * len(PLOTTED), 3.8))
    for axis, (unit, series) in zip(axes, PLOTTED.items(), strict=True):
        for label, stage, keys in series:
            points = [(row["items"], _value(row, stage, *keys)) for row in results["rows"]]
            scale = 1 / 1024 if unit.endswith("GiB") else 1
            points = [(x, y * scale) for x, y in points if y is not None]
            if points:
                axis.plot(*zip(*points, strict=True), "o-", label=label)
        axis.set(xscale="log", yscale="log", xlabel="catalog items", title=unit)
        axis.grid(True, which="both", alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
