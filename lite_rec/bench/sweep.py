"""`lite-rec bench sweep`: configuration variants of Lite-LLM4Rec trained on one prepared
dataset, each through the benchmark's runner (`lite_llm4rec` under the variant's config), for
recipe searches and speed checks (the median epoch's seconds is a column)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from lite_rec.bench.models import BenchData
from lite_rec.bench.report import sweep_markdown
from lite_rec.bench.run import generative_config, machine, output_folder, run_models, write_results
from lite_rec.config import load_config
from lite_rec.item_embeddings import item_embeddings
from lite_rec.sequences import load_sequences

MODEL = "lite_llm4rec"  # each variant is this model under the variant's config


@dataclasses.dataclass(frozen=True)
class Variant:
    """`NAME:key=value,key=value`: a name and `--set` overrides on top of the common ones."""

    name: str
    changes: list[str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, sep, changes = text.partition(":")
        if not sep or not name:
            raise ValueError(f"--variant {text!r}: expected NAME:key=value,...")
        return cls(name, [change for change in changes.split(",") if change])


def parse_seeds(text: str) -> list[int]:
    """`42,1,2` -> [42, 1, 2]"""
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected integers") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def planned_runs(variants: list[Variant], seeds: list[int]) -> list[tuple[str, Variant]]:
    """(run name, variant) for each variant, once per seed (`NAME_seed42`) when seeds are
    given; a seed run's changes end with its `train.seed`."""
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"--variant names must differ: {names}")
    if not seeds:
        return [(variant.name, variant) for variant in variants]
    return [
        (f"{v.name}_seed{seed}", Variant(v.name, [*v.changes, f"train.seed={seed}"]))
        for v in variants
        for seed in seeds
    ]


def run_sweep(
    data_dir: str | Path,
    variants: list[Variant],
    out_dir: str | Path,
    common: list[str] = (),
    params: str | Path | None = None,
    seeds: list[int] = (),
    jobs: int = 1,
    work_dir: str | Path | None = None,
    cache_dir: str | Path = "cache/item_embeddings",
    command: str = "lite-rec bench sweep",
) -> dict[str, Any]:
    """Train and score every variant (`jobs` at once, see `run_models`). results.json (`rows`:
    one per run, in plan order; `variant` is the run's name, `base` the variant's) and
    results.md are rewritten after each run. A run that fails is named in `failed` while the
    others go on; a RuntimeError names the failures at the end."""
    planned = planned_runs(variants, list(seeds))
    configs = [load_config(params, [*common, *variant.changes]) for _, variant in planned]
    out_dir = output_folder(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir / "work"
    data = load_sequences(data_dir)
    if configs[0].train.threads > 0:
        torch.set_num_threads(configs[0].train.threads)
    benches = []
    for (name, variant), config in zip(planned, configs, strict=True):
        embeddings = None
        if config.model.item_repr != "id":  # read from the cache after the first
            embeddings = item_embeddings(data.items, config.item_llm, cache_dir)[0]
        bench = BenchData(
            name,
            data,
            embeddings,
            None,
            config,
            generative_config(config),
            work_dir / name,
            Path(cache_dir),
        )
        section = {"variant": variant, "models": {}, "inference_ratio": {}}
        benches.append((bench, section))
    results: dict[str, Any] = {
        "command": command,
        "machine": machine(configs[0].train.device),
        "settings": {"data_dir": str(data_dir), "common": list(common), "seeds": list(seeds)}
        | {"jobs": jobs},
        "rows": [],
        "complete": False,
    }
    order = [name for name, _ in planned]

    def store(name: str, section: dict[str, Any]) -> None:
        variant, config = section["variant"], configs[order.index(name)]
        if MODEL in section["models"]:
            row = {"variant": name, "base": variant.name, "seed": config.train.seed}
            row |= {"overrides": variant.changes, **section["models"][MODEL]}
            results["rows"].append(row)
            results["rows"].sort(key=lambda r: order.index(r["variant"]))
        else:
            results.setdefault("failed", {})[name] = section["failed"][MODEL]
        write_results(out_dir, results, sweep_markdown(results))

    failed = run_models(benches, [MODEL], jobs, store)
    results["complete"] = not failed
    write_results(out_dir, results, sweep_markdown(results))
    if failed:
        raise RuntimeError(f"sweep run(s) failed: {', '.join(failed)} (see the log)")
    return results
