"""Typed configuration. `params.yaml` holds the defaults; the CLI (`--set a.b=v`), DVC and
Dagster all build the same classes from it."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = PROJECT_ROOT / "params.yaml"


@dataclass
class DataConfig:
    source: str = "data/raw/ml-latest-small"
    format: str = "auto"
    k_core: int = 5
    engine: str = "auto"  # auto | pandas | duckdb: how `prepare` runs (same outputs)


@dataclass
class ItemLLMConfig:
    """The Item LLM: a Hugging Face encoder that turns item text into one vector."""

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: str = "mean"  # mean | cls | max
    max_length: int = 64
    batch_size: int = 64
    template: str = "auto"  # auto picks one per dataset from the item table's columns
    normalize: bool = True


@dataclass
class ModelConfig:
    """The Recommendation LLM and the item projection head."""

    item_repr: str = "text+id"  # text | id | text+id
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.3
    max_len: int = 50
    # Position ids: "start" counts from each history's first item (a prefix scores the same
    # alone as inside a longer training window); "end" counts back from the last item, which
    # always sits at position max_len - 1, as in SASRec's left-padded sequences (part of
    # train.recipe's sparse recipe).
    positions: str = "start"
    backbone: str = "gpt2"  # a transformers config type, or a model id / path to load
    head_mlp: bool = False  # an MLP before the tied output: worse and slower to converge
    tie_output: bool = True
    # Whiten the text table before its projection (ZCA: zero mean, identity covariance, the
    # centred rows' mean norm), so the frozen Item LLM's few dominant directions do not drown the
    # rest; part of train.recipe=sparse.
    whiten_text: bool = False
    # Keep the text table's `text_dim` directions of largest variance (PCA; with whiten_text,
    # whitened), 0: every dimension of the Item LLM. Fewer make the text projection, which runs
    # over the whole catalog every step, proportionally cheaper.
    text_dim: int = 0
    # Fine-tune the Item LLM's last `finetune_layers` layers jointly (see lite_rec.item_tower);
    # each step re-encodes at most `finetune_items_per_step` of its batch's items (0: all).
    finetune_item_llm: bool = False
    finetune_layers: int = 1
    finetune_items_per_step: int = 256


@dataclass
class TrainConfig:
    # auto | none | a name in `Config.recipes` (params.yaml `recipes`): the overlay of settings
    # to apply, or none, or chosen from the data (lite_rec/recipe.py has the rule).
    recipe: str = "auto"
    strategy: str = "traversal"  # traversal | sampling
    loss: str = "ce"  # ce (full softmax) | sampled (sampled softmax)
    num_negatives: int = 1024  # the sampled loss's drawn negatives, shared by a batch
    # uniform | popularity: how they are drawn (popularity: (count + 1)^popularity_alpha, the
    # counts from the training sequences); each logit is corrected by its log probability.
    negatives: str = "uniform"
    popularity_alpha: float = 1.0
    in_batch_negatives: bool = False  # the batch's targets are negatives too (sampled loss)
    # The ID embedding's gradient as the rows a sampled-loss step touched, stepped by SparseAdam
    # (lazy Adam, no weight decay) instead of AdamW over every row; false: dense (DDP-ready).
    sparse_id_gradients: bool = False
    # Share of each target's label spread evenly over the scored items (0: plain cross-entropy).
    label_smoothing: float = 0.0
    epochs: int = 200
    # Stop training (before the refit epochs) after this many optimizer steps, mid-epoch if
    # need be; that epoch is still validated (0: no limit). For benchmarks of step time.
    max_steps: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    item_llm_lr: float = 1e-4  # the fine-tuned Item LLM layers (model.finetune_item_llm)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    # Stop after this many epochs without a better validation NDCG@10 (3 in the sparse recipe).
    patience: int = 5
    # "Better" means higher by more than this: once the rate has decayed (lr_decay), gains of
    # 1e-5 are noise, and counting them keeps training going for nothing (1e-4 in the sparse
    # recipe).
    min_delta: float = 0.0
    # Multiply the learning rate by `lr_decay` after every `lr_decay_patience` epochs without a
    # better validation NDCG@10 (1.0: constant learning rate after warmup).
    lr_decay: float = 1.0
    lr_decay_patience: int = 3
    # After early stopping, train this many more epochs from the best weights, at the best
    # epoch's rate, on sequences that end with the validation item (the test item stays held
    # out): the most recent interactions are the closest to what the test asks. The validation
    # scores of such a model are no longer held out (0: the best epoch's weights as they are).
    refit_epochs: int = 0
    eval_batch_size: int = 1024
    # Logits the full-catalog loss holds at a time (4M: 16 MB of float32). Taller chunks make
    # fewer, larger matrix products (bench/results/step_profile/).
    loss_chunk_logits: int = 1 << 22
    seed: int = 42
    threads: int = 0  # 0: every core torch sees (per process when nproc > 1)
    device: str = "cpu"  # a torch device; resuming is bit-identical on cpu
    # Processes per machine training data-parallel (DistributedDataParallel under torchrun:
    # gloo on cpu, nccl on cuda), each on its share of every batch (1: one process).
    nproc: int = 1


@dataclass
class ServingConfig:
    """Bounds and reloading of the model server (`lite-rec serve`) and the MLflow pyfunc."""

    max_k: int = 1000  # the most items one row may ask for
    max_rows: int = 1000  # the most rows (users) one request may hold
    # The most rows waiting to be scored; a request beyond them gets 503 with Retry-After.
    max_queued_rows: int = 20000
    max_request_mb: float = 16.0  # a larger request body is refused before it is read
    reload_seconds: float = 10.0  # how often `lite-rec serve` checks the alias's version
    threads: int = 1  # torch threads of the server's scoring (the HTTP side needs a core too)


# What a train key's behaviour was before the key existed. A training checkpoint that lacks a
# key was written by code that behaved so, whatever the default is now: resuming it with
# today's default would silently change the run. (Saved model sections are upgraded by
# `lite_rec.model_io.upgrade_model_section`.)
BEFORE_KEY_EXISTED: dict[str, dict[str, Any]] = {
    "train": {
        "recipe": "none",
        "label_smoothing": 0.0,
        "lr_decay": 1.0,
        "lr_decay_patience": 3,
        "min_delta": 0.0,
        "negatives": "uniform",
        "in_batch_negatives": False,
        "sparse_id_gradients": False,
    },
}


def saved_section(section: str, saved: dict[str, Any], defaults: Any) -> dict[str, Any]:
    """A config section as saved by an earlier run, completed with the behaviour of the keys
    added since: `BEFORE_KEY_EXISTED`, then `defaults` (a section dataclass) for the rest."""
    return {**dataclasses.asdict(defaults), **BEFORE_KEY_EXISTED.get(section, {}), **saved}


# `train.recipe`'s overlays: recipe -> section -> key -> value, set over params.yaml's values
# when the config is resolved against the data (`lite_rec.recipe.resolve_config`). `sparse` is
# what short-history, many-user data such as the Amazon 5-core sets need (docs/findings.md).
DEFAULT_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "sparse": {
        "model": {"dropout": 0.5, "positions": "end", "whiten_text": True},
        "train": {
            "lr_decay": 0.5,
            "lr_decay_patience": 1,
            "min_delta": 1e-4,
            "patience": 3,
            "refit_epochs": 2,
        },
    },
    "large": {
        "train": {
            "loss": "sampled",
            "num_negatives": 1024,
            "negatives": "uniform",
            "in_batch_negatives": False,
            "sparse_id_gradients": True,
        },
    },
}
# Recipe names with a meaning of their own: pick one from the data, or apply none.
BUILT_IN_RECIPES = ("auto", "none")
SECTIONS = ("data", "item_llm", "model", "train", "serving")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    item_llm: ItemLLMConfig = field(default_factory=ItemLLMConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    recipes: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_RECIPES)
    )
    # `section.key` names set explicitly (`--set`, Dagster's overrides): a recipe never
    # changes them, whatever their value.
    chosen: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The sections and the recipes, as params.yaml holds them."""
        sections = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        return {**sections, "recipes": copy.deepcopy(self.recipes)}

    def flat(self) -> dict[str, Any]:
        """`section.key -> value` of the sections, as logged to MLflow."""
        return {
            f"{section}.{key}": value
            for section in SECTIONS
            for key, value in dataclasses.asdict(getattr(self, section)).items()
        }


def _coerce(value: Any, kind: type, name: str) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value.lower() in {"true", "1", "yes"}
    try:
        return kind(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r}") from error


def _typed_section(section: str, entries: dict[str, Any], name: str) -> dict[str, Any]:
    """`entries` of config section `section`, each coerced to its key's type; an unknown key
    is refused by `name` (how the caller calls the section: `train`, `recipes.sparse.train`)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {name!r}")
    hints = get_type_hints(type(getattr(Config(), section)))
    typed = {}
    for key, value in (entries or {}).items():
        if key not in hints:
            raise ValueError(f"unknown key {name}.{key} (known: {', '.join(hints)})")
        typed[key] = _coerce(value, _base_type(hints[key]), f"{name}.{key}")
    return typed


def _typed_recipes(recipes: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    for recipe in recipes or {}:
        if recipe in BUILT_IN_RECIPES:
            raise ValueError(f"recipes.{recipe}: {recipe!r} is built in, pick another name")
    return {
        recipe: {
            section: _typed_section(section, entries, f"recipes.{recipe}.{section}")
            for section, entries in (sections or {}).items()
        }
        for recipe, sections in (recipes or {}).items()
    }


def config_from_dict(values: dict[str, Any], chosen: frozenset[str] = frozenset()) -> Config:
    """Build a `Config`, rejecting unknown sections and keys by name. `chosen`: the keys a
    person set explicitly (see `Config.chosen`)."""
    values = dict(values or {})
    recipes = _typed_recipes(values.pop("recipes")) if "recipes" in values else DEFAULT_RECIPES
    typed = {
        section: _typed_section(section, entries, section) for section, entries in values.items()
    }
    sections = {
        section: dataclasses.replace(getattr(Config(), section), **entries)
        for section, entries in typed.items()
    }
    config = Config(**sections, recipes=copy.deepcopy(recipes), chosen=frozenset(chosen))
    recipe = config.train.recipe
    if recipe not in (*BUILT_IN_RECIPES, *config.recipes):
        known = ", ".join((*BUILT_IN_RECIPES, *config.recipes))
        raise ValueError(f"train.recipe: expected one of {known}, got {recipe!r}")
    return config


def _base_type(hint: Any) -> type:
    return hint if isinstance(hint, type) else str


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, str]]:
    """`["train.lr=0.01", ...]` -> `{"train": {"lr": "0.01"}}`."""
    nested: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"--set {pair!r}: expected section.key=value, e.g. train.lr=0.001")
        nested.setdefault(section, {})[name] = value
    return nested


def load_config(params_file: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults from `params.yaml` (when present), then `--set` overrides, which the recipe
    (applied later, by `lite_rec.recipe.resolve_config`) never changes."""
    path = Path(params_file) if params_file else PARAMS_FILE
    values: dict[str, Any] = yaml.safe_load(path.read_text()) if path.exists() else {}
    values = {k: v for k, v in (values or {}).items() if k in (*SECTIONS, "recipes")}
    chosen = set()
    for section, entries in parse_overrides(list(overrides)).items():
        if section == "recipes":
            raise ValueError("--set recipes...: edit the recipes section of the params file")
        values.setdefault(section, {}).update(entries)
        chosen |= {f"{section}.{key}" for key in entries}
    return config_from_dict(values, frozenset(chosen))


def project_path(path: str | Path) -> Path:
    """A path from the config, relative paths taken from the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
