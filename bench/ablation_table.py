"""One Recall@10 / NDCG@10 table, datasets side by side, from one or more `lite-rec bench`
results.json files (the README's ablation table). A model found in several files is taken
from the first one that has it; the `run` column says which file each row came from.

    .venv/bin/python bench/ablation_table.py bench/results/amazon_ablation/results.json \\
        bench/results/amazon_finetuned/results.json"""

import argparse
import json
import sys
from pathlib import Path


def table(paths: list[Path], models: list[str] | None = None) -> str:
    """The markdown table; `models` picks and orders the rows (default: every model, in the
    order the files list them)."""
    runs = [json.loads(path.read_text()) for path in paths]
    datasets = list(dict.fromkeys(d for run in runs for d in run["datasets"]))
    models = models or list(
        dict.fromkeys(m for run in runs for s in run["datasets"].values() for m in s["models"])
    )
    header = ["model"] + [f"{d} R@10 / N@10 (epochs)" for d in datasets] + ["run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        cells, sources = [model], []
        for dataset in datasets:
            for index, run in enumerate(runs):
                row = run["datasets"].get(dataset, {}).get("models", {}).get(model)
                if row is not None:
                    cells.append(
                        f"{row['test_recall@10']:.4f} / {row['test_ndcg@10']:.4f} ({row['epochs']})"
                    )
                    sources.append(str(index + 1))
                    break
            else:
                cells.append("-")
        cells.append(", ".join(dict.fromkeys(sources)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [
        f"run {i + 1}: `{path}`: `{run['command']}`"
        for i, (path, run) in enumerate(zip(paths, runs, strict=True))
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    parser.add_argument("--models", default="", help="comma-separated rows (default: all)")
    args = parser.parse_args()
    sys.stdout.write(table(args.results, [m for m in args.models.split(",") if m]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
