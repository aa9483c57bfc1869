"""`lite-rec`: the command line the DVC stages, the Makefile and people use."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lite_rec.errors import InputError

log = logging.getLogger("lite_rec")


def _prepare(args: argparse.Namespace) -> int:
    from lite_rec.prepare import prepare

    processed = prepare(args.source, args.out, args.format, args.k_core)
    print(json.dumps(processed.stats))
    return 0


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
    prepare.set_defaults(run=_prepare)
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
    except (InputError, FileNotFoundError, ValueError) as error:
        print(f"lite-rec {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
