"""Seconds per training epoch of Lite-LLM4Rec and the validation pass's share of it, for
configuration variants and torch thread counts: the quick check before a change of batch size,
width or threads goes into a full `bench_model.py` run. Run it on a quiet machine.

    .venv/bin/python bench/epoch_time.py cache/bench/amazon-beauty-2014-5core/processed \\
        --threads 1,2 --variant base: --variant b256:train.batch_size=256

Each variant is `NAME:key=value,...` on top of params.yaml and `--set` (as in sweep.py). Each
(variant, threads, chunk) trains `--epochs` epochs from scratch; the row is the median epoch.
`--chunk-logits` compares sizes of the fused loss's chunks (`train.loss_chunk_logits`)."""

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from sweep import parse_variant  # also sets the OpenMP and offline environment

from lite_rec.config import PROJECT_ROOT, load_config
from lite_rec.evaluate import evaluate
from lite_rec.item_embeddings import item_embeddings
from lite_rec.sequences import load_sequences
from lite_rec.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a directory `lite-rec prepare` wrote")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (median taken)")
    parser.add_argument(
        "--chunk-logits",
        default=str(load_config().train.loss_chunk_logits),
        help="logits per chunk of the fused loss, comma-separated (default: the library's)",
    )
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    parser.add_argument("--cache", type=Path, default=PROJECT_ROOT / "cache/item_embeddings")
    parser.add_argument("--out", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()

    data = load_sequences(args.data_dir)
    rows = []
    for name, changes in args.variant:
        config = load_config(overrides=[*args.set, *changes])
        embeddings = None
        if "text" in config.model.item_repr:
            embeddings, _ = item_embeddings(data.items, config.item_llm, args.cache)
        thread_counts = [int(t) for t in args.threads.split(",")]
        chunks = [int(c) for c in args.chunk_logits.split(",")]
        for threads, chunk in itertools.product(thread_counts, chunks):
            config.train.loss_chunk_logits = chunk
            config.train.threads, config.train.epochs = threads, args.epochs
            config.train.patience = args.epochs + 1
            with tempfile.TemporaryDirectory() as out:
                result = train(data, embeddings, config.model, config.train, out, progress=False)
            started = time.perf_counter()
            evaluate(result.model, data, "valid", config.train.eval_batch_size)
            valid_s = time.perf_counter() - started
            epoch_s = statistics.median(row["seconds"] for row in result.history)
            rows.append(
                {
                    "variant": name,
                    "changes": changes,
                    "threads": threads,
                    "chunk_logits": chunk,
                    "epoch_s": epoch_s,
                    "valid_s": valid_s,
                    "train_s": epoch_s - valid_s,
                }
            )
            print(
                f"{name} threads={threads} chunk_logits={chunk}: {epoch_s:.1f} s per epoch "
                f"(validation {valid_s:.1f} s, training steps {epoch_s - valid_s:.1f} s)",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
