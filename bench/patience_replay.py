"""Replay early stopping on recorded training histories: for each run of `sweep.py`'s
results.json files, the epoch each shorter patience would have stopped at, the best epoch it
would have kept and the validation NDCG@10 given up against the recorded run's best.

Exact, not an estimate: a run's epochs up to a stop do not depend on the patience (the rate
decay counts bad epochs on its own), so a run with patience p is the recorded run cut short.
Only patiences up to the recorded one (`--recorded`) can be replayed.

    .venv/bin/python bench/patience_replay.py bench/results/beauty_cpu_sweep/s9_*/results.json \\
        --patience 2,3,4 --min-delta 1e-4"""

import argparse
import json
from pathlib import Path

from lite_rec.config import TrainConfig
from lite_rec.train import is_better


def replay(scores: list[float], patience: int, min_delta: float) -> tuple[int, int]:
    """(epochs run, best epoch), 1-based, as `lite_rec.train` decides on validation scores."""
    config = TrainConfig(min_delta=min_delta)
    best_epoch, best, bad = 0, float("-inf"), 0
    for epoch, score in enumerate(scores, start=1):
        if is_better(score, best, config):
            best_epoch, best, bad = epoch, score, 0
        else:
            bad += 1
            if bad >= patience:
                return epoch, best_epoch
    return len(scores), best_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="sweep.py results.json files")
    parser.add_argument("--patience", default="2,3,4", help="patiences to replay, comma-separated")
    parser.add_argument("--recorded", type=int, default=5, help="the runs' own patience")
    parser.add_argument("--min-delta", type=float, default=1e-4, help="the runs' min_delta")
    parser.add_argument("--metric", default="valid_ndcg@10")
    args = parser.parse_args()
    patiences = [int(p) for p in args.patience.split(",")]
    if max(patiences) > args.recorded:
        parser.error(f"--patience: at most the recorded patience {args.recorded}")
    header = ["run", "variant", "seed", f"recorded: epochs (best), {args.metric}"]
    header += [f"patience {p}: epochs (best), lost" for p in patiences]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    saved = {p: [] for p in patiences}
    lost = {p: [] for p in patiences}
    for path in args.results:
        for row in json.loads(path.read_text())["rows"]:
            scores = [epoch[args.metric] for epoch in row["history"]]
            epochs, best_epoch = replay(scores, args.recorded, args.min_delta)
            if epochs != len(scores):
                raise SystemExit(
                    f"{path}: {row['variant']} ran {len(scores)} epochs, but patience "
                    f"{args.recorded} with min_delta {args.min_delta:g} stops it at {epochs}: "
                    "check --recorded and --min-delta"
                )
            best = scores[best_epoch - 1]
            cells = [path.parent.name, row["variant"], str(row.get("seed", "-"))]
            cells.append(f"{epochs} ({best_epoch}), {best:.4f}")
            for p in patiences:
                stop, kept = replay(scores, p, args.min_delta)
                saved[p].append(epochs - stop)
                lost[p].append(best - scores[kept - 1])
                cells.append(f"{stop} ({kept}), {best - scores[kept - 1]:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    for p in patiences:
        same = sum(loss == 0 for loss in lost[p])
        print(
            f"\npatience {p}: {sum(saved[p])} epochs fewer over {len(saved[p])} runs "
            f"(mean {sum(saved[p]) / len(saved[p]):.1f}, min {min(saved[p])}); same best epoch "
            f"in {same}; {args.metric} lost: max {max(lost[p]):.4f}, "
            f"mean {sum(lost[p]) / len(lost[p]):.5f}"
        )


if __name__ == "__main__":
    main()
