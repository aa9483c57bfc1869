"""`lite-rec`: the command line the DVC stages, the Makefile and people use."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from lite_rec.errors import InputError

log = logging.getLogger("lite_rec")


def _prepare(args: argparse.Namespace) -> int:
    from lite_rec.prepare import prepare

    processed = prepare(args.source, args.out, args.format, args.k_core, args.engine)
    print(json.dumps(processed.stats))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from lite_rec.synth import SynthConfig, write_synthetic

    config = SynthConfig(args.users, args.items, args.interactions, args.seed)
    print(json.dumps(write_synthetic(config, args.out)))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from lite_rec.ingest import fetch

    print(fetch(args.name, args.dest))
    return 0


def _config(args: argparse.Namespace):
    from lite_rec.config import load_config

    return load_config(args.params, args.set)


def _embed(args: argparse.Namespace) -> int:
    import pandas as pd

    from lite_rec.item_embeddings import (
        item_embeddings,
        item_shards,
        parse_shard,
        write_item_embeddings,
    )
    from lite_rec.sequences import ITEMS_FILE

    shard = parse_shard(args.shard) if args.shard else None
    if shard is None and args.out is None:
        raise ValueError("--out: expected the folder to write, or --shard I/N to fill the cache")
    items = pd.read_parquet(args.data_dir / ITEMS_FILE)
    what = "item embeddings"
    if shard is not None:
        items = items[item_shards(items["item_id"].tolist(), shard[1]) == shard[0]]
        what = f"shard {shard[0]}/{shard[1]} of the item embeddings ({len(items)} items)"
    matrix, report = item_embeddings(items, _config(args).item_llm, args.cache)
    if args.out is not None:
        write_item_embeddings(args.out, items["item_id"].tolist(), matrix, report)
    log.info(
        "%s %s in %s (%d encoded, %d from the cache %s)",
        what,
        matrix.shape,
        args.out or "the cache",
        report.encoded,
        report.reused,
        args.cache,
    )
    return 0


def _text_embeddings(args: argparse.Namespace, config, data):
    """The Item LLM matrix for `data`'s items: from --embeddings, or encoded through the
    cache; None when the model uses item ids only."""
    from lite_rec.item_embeddings import item_embeddings, load_item_embeddings

    if "text" not in config.model.item_repr:
        return None
    if args.embeddings:
        item_ids, matrix = load_item_embeddings(args.embeddings)
        if item_ids != [str(i) for i in data.item_ids]:
            raise ValueError(f"{args.embeddings}: item ids differ from {args.data_dir}")
        return matrix
    return item_embeddings(data.items, config.item_llm, args.cache)[0]


def _train_command(args: argparse.Namespace) -> list[str]:
    """The `lite-rec train` arguments that `args` were parsed from, `--nproc` as `--set`."""
    command = ["--verbose"] * args.verbose + ["train", str(args.data_dir), "--out", str(args.out)]
    if args.embeddings:
        command += ["--embeddings", str(args.embeddings)]
    if args.tracking_uri:
        command += ["--tracking-uri", args.tracking_uri]
    if args.experiment:
        command += ["--experiment", args.experiment]
    if args.params:
        command += ["--params", str(args.params)]
    for setting in args.set:
        command += ["--set", setting]
    return [*command, "--cache", str(args.cache)]


def _train(args: argparse.Namespace) -> int:
    from lite_rec import distributed
    from lite_rec.pipeline import train_rec_model
    from lite_rec.pipes import training_report
    from lite_rec.recipe import resolve_config
    from lite_rec.sequences import load_sequences
    from lite_rec.tracking import EXPERIMENT, Tracking
    from lite_rec.train import check_data_parallel
    from lite_rec.trainer import check_train_config

    if args.nproc is not None:
        args.set = [*args.set, f"train.nproc={args.nproc}"]
    config = _config(args)
    ranks = config.train.nproc * args.nnodes
    if ranks > 1 and not distributed.launched():
        # Refused here, before torchrun starts workers, so that bad settings give one line.
        check_train_config(config.train)
        data = load_sequences(args.data_dir)
        resolved = resolve_config(config, data)
        check_data_parallel(resolved.model, resolved.train, ranks)
        _text_embeddings(args, config, data)  # the workers find every item in the cache
        command = distributed.launcher_command(
            config.train.nproc,
            _train_command(args),
            args.nnodes,
            args.node_rank,
            args.rdzv_endpoint,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *command])
    with distributed.process_group(config.train.device), training_report() as report:
        data = load_sequences(args.data_dir)
        embeddings = _text_embeddings(args, config, data)
        trained = train_rec_model(
            data,
            embeddings,
            config,
            args.out,
            Tracking(args.tracking_uri, args.experiment or EXPERIMENT),
            tags=report.tags if report else None,
            on_epoch_end=report.epoch if report else None,
        )
        if report and trained:
            report.trained(trained)
    if trained is None:  # a data-parallel rank other than 0: rank 0 reports
        distributed.exit_worker()
        return 0
    print(
        json.dumps(
            {
                "model_dir": str(args.out),
                "run_id": trained.run_id,
                "best_epoch": trained.best_epoch,
                **trained.valid_metrics,
            }
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lite_rec.outputs import write_file_atomically
    from lite_rec.pipeline import check_metrics_file, evaluate_rec_model
    from lite_rec.sequences import load_sequences
    from lite_rec.tracking import Tracking

    if args.out:
        check_metrics_file(args.out)
    tracking = None if args.no_mlflow else Tracking(args.tracking_uri)
    metrics = evaluate_rec_model(
        load_sequences(args.data_dir), args.model_dir, args.split, tracking
    )
    if args.out:
        write_file_atomically(args.out, json.dumps(metrics, indent=2) + "\n")
    if args.json:
        print(json.dumps(metrics))
    else:
        for name, value in metrics.items():
            print(f"{name:>10}  {value:.4f}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from lite_rec.serving import Recommender

    if (args.model_dir is None) == (args.model is None):
        raise ValueError("give either MODEL_DIR or --model NAME@ALIAS, not both or neither")
    if args.model:
        import mlflow

        from lite_rec.tracking import Tracking

        uri = Tracking(args.tracking_uri).resolved_uri
        mlflow.set_tracking_uri(uri)
        try:
            # suppress_warnings skips comparing the model's pip requirements with every
            # installed distribution, which takes longer than scoring (the server keeps it).
            pyfunc = mlflow.pyfunc.load_model(f"models:/{args.model}", suppress_warnings=True)
        except mlflow.exceptions.MlflowException as error:
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"--model {args.model}: not in the registry at {uri} ({reason}); expected "
                "NAME@ALIAS or NAME/VERSION of a registered model"
            ) from None
        recommender = pyfunc.unwrap_python_model().recommender
    else:  # no MLflow import: a model directory needs torch and the model only
        recommender = Recommender.load(args.model_dir, exact=args.exact)
    history = [item.strip() for item in args.history.split(",") if item.strip()]
    for item, score in recommender.recommend([history], args.k, exact=args.exact)[0]:
        print(f"{item}\t{score:.4f}")
    return 0


def _skip_compile_report() -> None:
    """Drop torch.compile's exit-time report, which lite-rec (compiling nothing) never needs:
    registered when transformers imports torch._dynamo, it imports `tabulate` at exit, 0.4 s
    of every command that loads a model."""
    import atexit

    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    if dynamo_utils is not None and hasattr(dynamo_utils, "dump_compile_times"):
        atexit.unregister(dynamo_utils.dump_compile_times)


def _index(args: argparse.Namespace) -> int:
    from lite_rec.ann import IndexConfig, index_model_folder
    from lite_rec.sequences import load_sequences

    given = {name: getattr(args, name) for name in INDEX_OPTIONS if getattr(args, name) is not None}
    data = None
    if args.data is not None:
        if not (args.data / "interactions.parquet").is_file():
            raise InputError(args.data, "expected a data folder `lite-rec prepare` wrote")
        data = load_sequences(args.data)
    info = index_model_folder(args.model_dir, IndexConfig(**given), data, args.sample_users)
    if not args.no_log and (args.model_dir / "mlflow_run.json").is_file():
        from lite_rec.tracking import Tracking, log_indexed_model

        info["model_uri"] = log_indexed_model(args.model_dir, Tracking(args.tracking_uri))
    print(json.dumps(info))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lite_rec.server import ModelSource, serve

    source = ModelSource(args.model or "", str(args.model_dir or ""), args.tracking_uri)
    serve(source, _config(args).serving, args.host, args.port, args.workers)
    return 0


def _register(args: argparse.Namespace) -> int:
    from lite_rec.pipeline import load_trained_model
    from lite_rec.registry import (
        GatePolicy,
        dataset_name,
        register_and_gate,
        registered_model_name,
    )
    from lite_rec.sequences import load_sequences
    from lite_rec.tracking import Tracking

    tracking = Tracking(args.tracking_uri)
    trained = load_trained_model(args.model_dir, tracking)
    name = args.model or registered_model_name(dataset_name(trained.config))
    policy = GatePolicy(args.metric, args.min_margin)
    decision = register_and_gate(trained, load_sequences(args.data_dir), name, tracking, policy)
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    print(f"{name} version {decision.version} {verdict}: {decision.reason}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from lite_rec.registry import promote
    from lite_rec.tracking import Tracking

    promote(args.model, args.version, Tracking(args.tracking_uri), args.reason)
    print(f"{args.model} version {args.version} is champion")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from lite_rec.registry import rollback
    from lite_rec.tracking import Tracking

    version = rollback(args.model, Tracking(args.tracking_uri), args.reason)
    print(f"{args.model} version {version} is champion again")
    return 0


# Set before a bench tool imports torch or the hub: OpenMP threads that sleep when idle, no
# network for the Item LLM, no telemetry from MLflow or Great Expectations.
BENCH_ENVIRONMENT = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


def _bench(args: argparse.Namespace) -> int:
    """`lite-rec bench [TOOL]`: the environment, then the tool (default: every model)."""
    for name, value in BENCH_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    args.command_line = shlex.join(["lite-rec", *sys.argv[1:]])
    return args.bench_tool(args)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _bench_models(args: argparse.Namespace) -> int:
    from lite_rec.bench import MODELS, generative_config, run_bench

    config = _config(args)
    tracking = None
    if not args.no_mlflow:
        from lite_rec.tracking import Tracking

        tracking = Tracking(args.tracking_uri)
    results = run_bench(
        _names(args.datasets),
        _names(args.models) or list(MODELS),
        args.out,
        config,
        generative_config(config, args.generative_epochs, args.generative_examples_per_user),
        work_dir=args.work_dir,
        cache_dir=args.cache,
        tracking=tracking,
        quick=args.quick,
        command=args.command_line,
        jobs=args.jobs,
    )
    print((args.out / "results.md").read_text())
    return 0 if results["datasets"] else 2


def _bench_sweep(args: argparse.Namespace) -> int:
    from lite_rec.bench.sweep import Variant, parse_seeds, run_sweep

    run_sweep(
        args.data_dir,
        [Variant.parse(text) for text in args.variant],
        args.out,
        args.set,
        args.params,
        parse_seeds(args.seeds) if args.seeds else [],
        args.jobs,
        args.work_dir,
        args.cache,
        args.command_line,
    )
    print((args.out / "results.md").read_text())
    return 0


def _bench_ddp(args: argparse.Namespace) -> int:
    from lite_rec.bench.ddp import run_ddp
    from lite_rec.bench.sweep import parse_seeds

    run_ddp(
        args.data_dir,
        args.out,
        args.work,
        parse_seeds(args.seeds),
        args.nproc,
        args.set,
        args.params,
        args.cache,
        args.command_line,
    )
    print((args.out / "results.md").read_text())
    return 0


def _bench_step_profile(args: argparse.Namespace) -> int:
    from lite_rec.bench.step_profile import run_step_profile, step_profile_markdown

    batch_sizes = [int(size) for size in _names(args.batch_sizes)]
    results = run_step_profile(
        args.data_dir, _config(args), batch_sizes, args.steps, args.top, args.out, args.command_line
    )
    print(step_profile_markdown(results))
    return 0


def _bench_step_cost(args: argparse.Namespace) -> int:
    from lite_rec.bench.step_cost import VARIANTS, run_step_cost, step_cost_markdown
    from lite_rec.bench.sweep import Variant

    variants = [Variant.parse(text) for text in args.variant] or VARIANTS
    sizes = [int(size) for size in _names(args.items)]
    results = run_step_cost(
        variants,
        sizes,
        args.set,
        args.params,
        args.steps,
        args.seconds,
        args.rounds,
        args.out,
        args.command_line,
    )
    print(step_cost_markdown(results))
    return 0


# `lite-rec index` options: `lite_rec.ann.IndexConfig` fields, whose defaults apply when absent.
INDEX_OPTIONS = {
    "kind": "hnsw | ivf | scann",
    "hnsw_m": "HNSW graph neighbours per item (16)",
    "ef_construction": "HNSW candidates kept while adding an item (200)",
    "ef_search": "HNSW candidates kept while searching (256)",
    "nlist": "IVF clusters or ScaNN partitions (0, the default: ivf 4 x sqrt(items), scann "
    "8 x sqrt(items))",
    "nprobe": "IVF clusters or ScaNN partitions searched per user (0, the default: ivf nlist / 8, "
    "scann 240)",
    "reorder": "ScaNN candidates per user scored in float (64)",
}


# The numeric ones, which `lite-rec index` takes as --NAME and `lite-rec bench scale` as
# --ann-NAME.
INDEX_NUMBERS = [name for name in INDEX_OPTIONS if name != "kind"]
INDEX_KINDS = ["hnsw", "ivf", "scann"]  # lite_rec.ann.KINDS, which imports torch


def _bench_scale(args: argparse.Namespace) -> int:
    from lite_rec.bench.scale import ScaleSettings, run_scale, scale_markdown

    settings = ScaleSettings(
        train_steps=args.train_steps,
        full_steps=args.full_steps,
        embed_sample=args.embed_sample,
        eval_users=args.eval_users,
        ann_users=args.ann_users,
        ann_kind=args.ann_kind,
        ann_index={
            name: getattr(args, f"ann_{name}")
            for name in INDEX_NUMBERS
            if getattr(args, f"ann_{name}") is not None
        },
        seed=args.seed,
        changes=args.set,
    )
    sizes = [int(size) for size in _names(args.sizes)]
    results = run_scale(
        sizes, args.out, args.work, settings, _names(args.stages), args.params, args.command_line
    )
    print(scale_markdown(results))
    return 0


def _bench_ranking(args: argparse.Namespace) -> int:
    from lite_rec.bench.ranking_speed import ranking_speed_markdown, run_ranking_speed

    chunks = [None if text == "auto" else int(text) for text in _names(args.item_chunks)]
    sizes = [int(size) for size in _names(args.items)]
    results = run_ranking_speed(
        sizes, chunks, args.users, args.repeats, args.params, args.out, args.command_line
    )
    print(ranking_speed_markdown(results))
    return 0


def _bench_patience_replay(args: argparse.Namespace) -> int:
    from lite_rec.bench.patience import patience_replay

    patiences = [int(p) for p in _names(args.patience)]
    print(patience_replay(args.results, patiences, args.recorded, args.min_delta, args.metric))
    return 0


def _bench_table(args: argparse.Namespace) -> int:
    from lite_rec.bench.report import comparison_table

    print(comparison_table(args.results, _names(args.models)), end="")
    return 0


def _bench_data(args: argparse.Namespace) -> int:
    from lite_rec.bench.data import run_data_bench

    run_data_bench(_names(args.datasets), _config(args), args.out, args.command_line)
    print((args.out / "results.md").read_text())
    return 0


def _bench_serve_load(args: argparse.Namespace) -> int:
    from lite_rec.bench.serve_load import SERVERS, LoadTest, run_load_test

    test = LoadTest(
        model_dir=args.model_dir,
        source=args.source,
        train_set=args.set,
        clients=[int(c) for c in _names(args.clients)],
        seconds=args.seconds,
        max_requests=args.max_requests,
        warmup_seconds=args.warmup_seconds,
        rows=args.rows,
        mlflow_workers=args.mlflow_workers,
        workers=args.workers,
        serve_set=args.serve_set,
        servers=(args.only,) if args.only else SERVERS,
    )
    run_load_test(test, args.out, args.command_line)
    print((args.out / "results.md").read_text())
    return 0


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file with the defaults (default: the project's params.yaml)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set train.epochs=5 (repeatable)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("cache/item_embeddings"),
        help="Item LLM embedding cache (default: cache/item_embeddings)",
    )


def _add_bench_parser(commands) -> None:
    """`lite-rec bench`: every model on the same splits, or one of its tools (subcommands)."""
    bench = commands.add_parser(
        "bench",
        help="every model and ablation on the same splits: accuracy, speed, memory",
        description="Train and test every model on each dataset with the same splits, seeds and "
        "metrics, timing each phase; write results.json, results.md and PNG plots to --out and "
        "log them to MLflow. A TOOL instead runs one of the benchmark's tools (bench/README.md).",
    )
    bench.add_argument(
        "--datasets",
        default="ml-latest-small",
        help="comma-separated names (under data/raw or ../shared/datasets) or paths "
        "(default: ml-latest-small)",
    )
    bench.add_argument(
        "--models",
        default="",
        help="comma-separated model names (default: all; see lite_rec.bench.MODELS)",
    )
    bench.add_argument("--out", type=Path, default=Path("bench/results"))
    bench.add_argument(
        "--work-dir", type=Path, default=Path("cache/bench"), help="prepared data and models"
    )
    bench.add_argument(
        "--quick", action="store_true", help="2 epochs per model (generative: 1): a smoke run"
    )
    bench.add_argument("--generative-epochs", type=int, default=30)
    bench.add_argument(
        "--generative-examples-per-user",
        type=int,
        default=0,
        help="training targets drawn per user per epoch for the generative models "
        "(default 0: every position, as the projection-head models train)",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="models trained at once, each in its own process with train.threads threads "
        "(default 1). Above 1 the timings include the contention: use it for accuracy tables "
        "on a many-core machine or a GPU (--set train.device=cuda)",
    )
    bench.add_argument("--tracking-uri", default="")
    bench.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    _add_config_options(bench)
    bench.set_defaults(run=_bench, bench_tool=_bench_models)
    _add_bench_tools(bench.add_subparsers(dest="bench_command", metavar="TOOL"))


def _add_bench_tools(tools) -> None:
    sweep = tools.add_parser(
        "sweep",
        help="configuration variants of Lite-LLM4Rec on one prepared dataset, side by side",
        description="Train each variant (NAME:key=value,... on top of params.yaml and --set) "
        "as `lite-rec bench` trains lite_llm4rec, and score, time and table it; with --seeds, "
        "once per seed, with each variant's mean (sd) over them. The median epoch's seconds is "
        "a column: with --set train.epochs=3 --set train.patience=4 a sweep is a speed check.",
    )
    sweep.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    sweep.add_argument(
        "--variant", action="append", required=True, metavar="NAME:KEY=VALUE,...", help="repeat"
    )
    sweep.add_argument("--seeds", default="", help="run each variant once per seed, e.g. 42,1")
    sweep.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, one process each (timings then include the contention)",
    )
    sweep.add_argument("--out", type=Path, default=Path("bench/results/sweep"))
    sweep.add_argument("--work-dir", type=Path, default=None, help="models (default: OUT/work)")
    _add_config_options(sweep)
    sweep.set_defaults(bench_tool=_bench_sweep)

    ddp = tools.add_parser(
        "ddp",
        help="data-parallel training (--nproc N) against one process, per seed",
        description="For each seed, `lite-rec train` in one process with N threads and with "
        "--nproc N (torchrun, one thread per rank), then `lite-rec evaluate --split test`: "
        "validation and test NDCG@10 / Recall@10, their mean and spread over the seeds, the "
        "median epoch time of each and their ratio.",
    )
    ddp.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    ddp.add_argument("--seeds", default="42,43,44", help="comma-separated (42,43,44)")
    ddp.add_argument("--nproc", type=int, default=2, help="processes, and one process's threads")
    ddp.add_argument("--out", type=Path, default=Path("bench/results/ddp"))
    ddp.add_argument(
        "--work", type=Path, default=Path("/tmp/lite-rec-ddp"), help="models and MLflow store"
    )
    _add_config_options(ddp)
    ddp.set_defaults(bench_tool=_bench_ddp)

    step = tools.add_parser(
        "step-profile",
        help="where a training step's time goes, per batch size (torch.profiler)",
        description="Time training steps (forward, backward, clipping, AdamW) of a fresh "
        "Lite-LLM4Rec at each batch size, as the trainer steps it, with random 384-d text "
        "vectors, and print torch.profiler's top operators; threads: --set train.threads=N.",
    )
    step.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    step.add_argument("--batch-sizes", default="128,64", help="comma-separated (128,64)")
    step.add_argument("--steps", type=int, default=120, help="timed steps per batch size (120)")
    step.add_argument("--top", type=int, default=12, help="profiler rows (12)")
    step.add_argument("--out", type=Path, default=None, help="also write the report here")
    _add_config_options(step)
    step.set_defaults(bench_tool=_bench_step_profile)

    cost = tools.add_parser(
        "step-cost",
        help="training step time and peak RSS by catalog size, full loss against sampled",
        description="For each catalog size and variant (NAME:key=value,...; default: the "
        "full loss, the large recipe, it without in-batch negatives, it with dense id "
        "gradients), a fresh process times training steps of the default model on random "
        "full-length windows (random 384-d text vectors) and records its peak RSS.",
    )
    cost.add_argument("--items", default="10000,30000,100000,300000,1000000", help="catalog sizes")
    cost.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    cost.add_argument("--steps", type=int, default=20, help="timed steps at most (20)")
    cost.add_argument("--seconds", type=float, default=30.0, help="timed seconds at most (30)")
    cost.add_argument("--rounds", type=int, default=1, help="passes over every cell (1)")
    cost.add_argument("--out", type=Path, default=Path("bench/results/step_cost"))
    _add_config_options(cost)
    cost.set_defaults(bench_tool=_bench_step_cost)

    scale = tools.add_parser(
        "scale",
        help="each stage's seconds, throughput and peak RSS on synthetic catalogs of growing size",
        description="For each catalog size (synthetic: 2 users and 20 interactions per item), "
        "each in a fresh process: prepare (duckdb; pandas up to 100,000 items), MiniLM item "
        "embedding, training steps of the sampled loss (and of the full loss up to 100,000 "
        "items), exact top-10 ranking, the ANN index, and test NDCG@10 / HR@10 against "
        "popularity. Writes results.json, results.md and scale.png to --out; rows of sizes "
        "and stages not rerun are kept.",
    )
    scale.add_argument("--sizes", default="10000,100000,1000000", help="catalog sizes")
    scale.add_argument(
        "--stages",
        default="prepare,embed,train,evaluate,ann",
        help="the stages to (re)run (default: all of prepare,embed,train,evaluate,ann)",
    )
    scale.add_argument(
        "--work", type=Path, default=Path("/tmp/lite-rec-scale"), help="data and models"
    )
    scale.add_argument("--out", type=Path, default=Path("bench/results/scale"))
    scale.add_argument("--train-steps", type=int, default=1000, help="sampled-loss steps (1000)")
    scale.add_argument("--full-steps", type=int, default=20, help="full-loss steps at most (20)")
    scale.add_argument("--embed-sample", type=int, default=20_000, help="items embedded (20000)")
    scale.add_argument("--eval-users", type=int, default=4_000, help="test users ranked (4000)")
    scale.add_argument("--ann-users", type=int, default=1_000, help="users of the ANN recall")
    scale.add_argument("--ann-kind", choices=INDEX_KINDS, default="hnsw")
    for name in INDEX_NUMBERS:
        scale.add_argument(
            f"--ann-{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"{INDEX_OPTIONS[name]}, as lite-rec index",
        )
    scale.add_argument("--seed", type=int, default=0, help="of the data and user samples")
    scale.add_argument("--params", type=Path, default=None, help="params file (params.yaml)")
    scale.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="model setting"
    )
    scale.set_defaults(bench_tool=_bench_scale)

    ranking = tools.add_parser(
        "ranking",
        help="exact full-catalog ranking against the matrix product, by catalog size",
        description="For each catalog size, a fresh process builds the default model (random "
        "384-d text vectors) and times rank_catalog (evaluation and top-10, medians of 3) "
        "against the (1024 x d) @ (d x chunk) product into a reused buffer; users/s, the "
        "fraction of the product reached, peak RSS.",
    )
    ranking.add_argument("--items", default="10000,100000,1000000", help="catalog sizes")
    ranking.add_argument("--item-chunks", default="auto", help="item chunks; auto: rank_catalog's")
    ranking.add_argument("--users", type=int, default=2048, help="users ranked per pass (2048)")
    ranking.add_argument("--repeats", type=int, default=3, help="timed passes (3)")
    ranking.add_argument("--out", type=Path, default=Path("bench/results/ranking"))
    _add_config_options(ranking)
    ranking.set_defaults(bench_tool=_bench_ranking)

    replay = tools.add_parser(
        "patience-replay",
        help="early stopping replayed with shorter patiences on recorded sweep histories",
        description="For each run in sweep results.json files: where each shorter patience "
        "would have stopped, the best epoch it keeps and the validation metric it gives up.",
    )
    replay.add_argument("results", type=Path, nargs="+", help="sweep results.json files")
    replay.add_argument("--patience", default="2,3,4", help="patiences to replay (2,3,4)")
    replay.add_argument("--recorded", type=int, default=5, help="the runs' own patience (5)")
    replay.add_argument("--min-delta", type=float, default=1e-4, help="the runs' min_delta")
    replay.add_argument("--metric", default="valid_ndcg@10")
    replay.set_defaults(bench_tool=_bench_patience_replay)

    table = tools.add_parser(
        "table",
        help="one Recall@10 / NDCG@10 table, datasets side by side, from several bench runs",
        description="A model found in several results.json files is taken from the first one "
        "that has it; the `run` column says which file each row came from.",
    )
    table.add_argument("results", type=Path, nargs="+", help="`lite-rec bench` results.json")
    table.add_argument("--models", default="", help="comma-separated rows (default: all)")
    table.set_defaults(bench_tool=_bench_table)

    data = tools.add_parser(
        "data",
        help="`prepare` on each dataset and the Item LLM cache, timed",
        description="In-process `prepare` of each dataset (median of 3), then the first "
        "dataset's catalog embedded from an empty cache and again after one title changed.",
    )
    data.add_argument(
        "--datasets", default="ml-latest-small", help="comma-separated names or paths"
    )
    data.add_argument("--out", type=Path, default=Path("bench/results/data"))
    _add_config_options(data)
    data.set_defaults(bench_tool=_bench_data)

    load = tools.add_parser(
        "serve-load",
        help="load test of `lite-rec serve` against `mlflow models serve`",
        description="Register a model in a temporary sqlite MLflow store (by default one "
        "trained on --source for 2 epochs with item ids only), start each server alone on a "
        "free 127.0.0.1 port and drive it with N concurrent keep-alive clients: throughput, "
        "latency percentiles, errors, the server's peak RSS and the machine's load.",
    )
    load.add_argument("--model-dir", type=Path, default=None, help="a `lite-rec train` output")
    load.add_argument("--source", type=Path, default=Path("data/raw/ml-latest-small"))
    load.add_argument("--set", action="append", default=[], help="training override")
    load.add_argument("--clients", default="8,32", help="concurrent clients per phase")
    load.add_argument("--seconds", type=float, default=30.0, help="per phase (30)")
    load.add_argument("--max-requests", type=int, default=100_000, help="per phase")
    load.add_argument("--warmup-seconds", type=float, default=3.0)
    load.add_argument("--rows", type=int, default=1, help="users per request (1)")
    load.add_argument("--mlflow-workers", type=int, default=2, help="as docker/compose.yaml")
    load.add_argument("--workers", type=int, default=1, help="lite-rec serve workers (1)")
    load.add_argument("--serve-set", action="append", default=[], help="lite-rec serve --set")
    load.add_argument(
        "--only", choices=["mlflow models serve", "lite-rec serve"], help="one server only"
    )
    load.add_argument("--out", type=Path, default=Path("bench/results/serve_load"))
    load.set_defaults(bench_tool=_bench_serve_load)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lite-rec",
        description="Lite-LLM4Rec sequential recommendation: prepare data, embed items, "
        "train, evaluate, recommend.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="ingest, validate, k-core filter and leave-one-out split a dataset",
        description="Read a dataset directory (format auto-detected), validate it with Great "
        "Expectations, k-core filter it, split it leave-one-out by time and write "
        "items.parquet, interactions.parquet and stats.json to --out. On invalid input it "
        "exits non-zero and writes nothing.",
    )
    prepare.add_argument("--source", required=True, type=Path, help="raw dataset directory")
    prepare.add_argument("--out", required=True, type=Path, help="output directory")
    prepare.add_argument(
        "--format",
        default="auto",
        help="movielens-csv | movielens-1m | movielens-100k | amazon-2014 | amazon-2018 | "
        "sequence | auto (default: detect from the files)",
    )
    prepare.add_argument("--k-core", type=int, default=5, help="minimum interactions (5)")
    prepare.add_argument(
        "--engine",
        choices=["auto", "pandas", "duckdb"],
        default="auto",
        help="pandas (in memory) | duckdb (bounded memory, spills to disk beside --out) | "
        "auto (default: duckdb for the MovieLens formats, pandas for the others); the same "
        "files either way",
    )
    prepare.set_defaults(run=_prepare)

    synth = commands.add_parser(
        "synth",
        help="write a synthetic dataset with learnable structure, for scale benchmarks",
        description="Write ratings.csv and movies.csv (MovieLens CSV, which `prepare` reads) "
        "to --out: items in latent clusters with Markov transitions between clusters, "
        "power-law popularity, increasing timestamps and titles made of each cluster's words. "
        "Deterministic by --seed; streamed to disk in blocks of users.",
    )
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--items", type=int, required=True)
    synth.add_argument("--interactions", type=int, required=True, help="at least 5 per user")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.set_defaults(run=_synth)

    from lite_rec.ingest.download import SOURCES

    fetch = commands.add_parser(
        "fetch",
        help="download an official dataset (resumable, sha256-checked) unless already present",
        description="Download NAME into DEST/NAME. Files already there are used as they are; "
        "offline, the error says which URL to fetch by hand and where to put it.",
    )
    fetch.add_argument("name", choices=sorted(SOURCES))
    fetch.add_argument("--dest", type=Path, default=Path("data/raw"))
    fetch.set_defaults(run=_fetch)

    embed = commands.add_parser(
        "embed",
        help="encode every item's text with the Item LLM (cached)",
        description="Write DATA_DIR's item embeddings to --out; only items whose text the "
        "cache has not seen are encoded. With --shard I/N, only the items of shard I of N "
        "(by a hash of the item id) are encoded into the cache: N such commands, on one machine "
        "or several sharing the cache folder, then one without --shard writes --out from the "
        "cache alone.",
    )
    embed.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    embed.add_argument("--out", type=Path, default=None, help="required without --shard")
    embed.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="encode only shard I (0-based) of N into the cache; --out then holds that shard",
    )
    _add_config_options(embed)
    embed.set_defaults(run=_embed)

    train = commands.add_parser(
        "train",
        help="train the Recommendation LLM and log the run to MLflow",
        description="Train on DATA_DIR's training sequences with early stopping on validation "
        "NDCG@10, checkpointing every epoch (rerun the same command to resume after a crash), "
        "then train.refit_epochs more epochs from the best one with the validation items "
        "included (2 under train.recipe=sparse). Writes the model to --out and logs an MLflow "
        "run with the pyfunc model.",
    )
    train.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    train.add_argument("--out", required=True, type=Path, help="model directory")
    train.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="what `lite-rec embed` wrote (default: encode through the cache)",
    )
    train.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)",
    )
    train.add_argument("--experiment", default="", help="MLflow experiment (default: lite_rec)")
    train.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="data-parallel training processes on this machine, started through torchrun "
        "(gloo on cpu, nccl on cuda; default: train.nproc); rerun the same command to resume",
    )
    train.add_argument(
        "--nnodes", type=int, default=1, help="machines training together (default: 1)"
    )
    train.add_argument(
        "--node-rank", type=int, default=None, help="this machine's rank among --nnodes"
    )
    train.add_argument(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="where the --nnodes machines meet (torchrun's c10d rendezvous)",
    )
    _add_config_options(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="full-ranking Recall/NDCG@{5,10,20} and MRR of a trained model",
        description="Rank every catalog item (minus the user's history) for each user.",
    )
    evaluate.add_argument("data_dir", type=Path)
    evaluate.add_argument("model_dir", type=Path)
    evaluate.add_argument("--split", choices=["test", "valid"], default="test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    evaluate.add_argument("--tracking-uri", default="")
    evaluate.add_argument(
        "--no-mlflow", action="store_true", help="do not log the metrics to the training run"
    )
    evaluate.set_defaults(run=_evaluate)

    recommend = commands.add_parser(
        "recommend",
        help="top-K raw item ids for a history of raw item ids",
        description="Unknown ids are ignored with a warning; a history with no known item "
        "gets the most popular training items.",
    )
    recommend.add_argument("model_dir", type=Path, nargs="?", help="a `lite-rec train` output")
    recommend.add_argument(
        "--model", default=None, help="a registered model instead: NAME@ALIAS or NAME/VERSION"
    )
    recommend.add_argument("--history", required=True, help="raw item ids, oldest first: A,B,C")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--exact", action="store_true", help="rank the whole catalog even with an item index"
    )
    recommend.add_argument("--tracking-uri", default="")
    recommend.set_defaults(run=_recommend)

    index = commands.add_parser(
        "index",
        help="build the approximate item index that recommend, serve and the pyfunc use",
        description="Build an index of MODEL_DIR's items into the folder (faiss HNSW or IVF: "
        "item_index.faiss; ScaNN: item_index.scann; and item_index.json), with its recall@10 "
        "against exact ranking measured on --data's validation histories (without --data: "
        "random histories drawn by training popularity). Recommendations then come through "
        "it; a retrained model ignores it until rebuilt.",
    )
    index.add_argument("model_dir", type=Path, help="a `lite-rec train` output")
    index.add_argument(
        "--kind", choices=INDEX_KINDS, default=None, help="hnsw (default) | ivf | scann"
    )
    index.add_argument("--data", type=Path, default=None, help="what `lite-rec prepare` wrote")
    index.add_argument("--sample-users", type=int, default=1000, help="users recall is measured on")
    index.add_argument(
        "--no-log",
        action="store_true",
        help="leave the training run's logged model as it is (default: log it again with the "
        "index, into the run that trained the folder, so that `lite-rec register` registers it)",
    )
    index.add_argument("--tracking-uri", default="", help="the store that trained the folder")
    for option in INDEX_NUMBERS:
        index.add_argument(
            "--" + option.replace("_", "-"), type=int, default=None, help=INDEX_OPTIONS[option]
        )
    index.set_defaults(run=_index)

    serve = commands.add_parser(
        "serve",
        help="the model server: MLflow's scoring protocol, batched, following the alias",
        description="Serve a registered model (NAME@ALIAS, followed through promotions and "
        "rollbacks every serving.reload_seconds; or NAME/VERSION) or a model directory on POST "
        "/invocations, as `mlflow models serve` does, with /ping and /health. Bounds and "
        "reloading come from params.yaml's serving section (--set serving.max_k=100).",
    )
    serve.add_argument("model_dir", type=Path, nargs="?", help="a `lite-rec train` output")
    serve.add_argument(
        "--model", default=None, help="a registered model instead: NAME@ALIAS or NAME/VERSION"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=int, default=1, help="processes, each with its own model (1)"
    )
    serve.add_argument("--tracking-uri", default="")
    serve.add_argument("--params", type=Path, default=None, help="params file (params.yaml)")
    serve.add_argument("--set", action="append", default=[], metavar="SERVING.KEY=VALUE")
    serve.set_defaults(run=_serve)

    register = commands.add_parser(
        "register",
        help="register a trained model and let the gate decide whether it becomes champion",
        description="Register MODEL_DIR's logged model as a new version (alias challenger) and "
        "promote it to champion only when it beats the current champion on DATA_DIR's "
        "validation split, under the same lock the pipeline's gate takes.",
    )
    register.add_argument("data_dir", type=Path, help="what `lite-rec prepare` wrote")
    register.add_argument("model_dir", type=Path, help="what `lite-rec train` wrote")
    register.add_argument(
        "--model", default=None, help="registered model name (default: lite_rec_<dataset>)"
    )
    register.add_argument("--metric", default="valid_ndcg_at_10", help="the gate's metric")
    register.add_argument("--min-margin", type=float, default=0.0, help="needed gain (0)")
    register.add_argument("--tracking-uri", default="")
    register.set_defaults(run=_register)

    for command, text in (
        ("promote", "make a registered model version the champion, by hand"),
        ("rollback", "give the champion alias back to the previous champion"),
    ):
        sub = commands.add_parser(command, help=text, description=text + " (recorded as tags).")
        sub.add_argument("--model", required=True, help="registered model name")
        if command == "promote":
            sub.add_argument("--version", required=True, type=int)
        sub.add_argument("--reason", default="", help="why, recorded on the version")
        sub.add_argument("--tracking-uri", default="")
        sub.set_defaults(run=_promote if command == "promote" else _rollback)
    _add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (InputError, OSError, ValueError) as error:
        print(f"lite-rec {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        _skip_compile_report()


if __name__ == "__main__":
    sys.exit(main())
