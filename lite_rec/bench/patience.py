"""`lite-rec bench patience-replay`: early stopping replayed on recorded training histories.
For each run of `lite-rec bench sweep` results.json files, the epoch each shorter patience
would have stopped at, the best epoch it would have kept and the validation metric given up
against the recorded run's best.

Exact, not an estimate: a run's epochs up to a stop do not depend on the patience (the rate
decay counts bad epochs on its own), so a run with patience p is the recorded run cut short.
Only patiences up to the recorded one can be replayed."""

from __future__ import annotations

import json
from pathlib import Path

from lite_rec.bench.report import markdown_table
from lite_rec.config import TrainConfig
from lite_rec.trainer import is_better


def replay(scores: list[float], patience: int, min_delta: float) -> tuple[int, int]:
    """(epochs run, best epoch), 1-based, as the trainer decides on validation scores."""
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


def patience_replay(
    paths: list[Path],
    patiences: list[int],
    recorded: int,
    min_delta: float,
    metric: str = "valid_ndcg@10",
) -> str:
    """The markdown report: one row per recorded run, then per patience the epochs saved and
    the metric lost. ValueError when a patience exceeds `recorded`, or when a run's history
    does not stop where `recorded` and `min_delta` say it would (not the settings it ran)."""
    if max(patiences) > recorded:
        raise ValueError(f"--patience: at most the recorded patience {recorded}")
    columns = ["run", "variant", "seed", f"recorded: epochs (best), {metric}"]
    columns += [f"patience {p}: epochs (best), lost" for p in patiences]
    rows, saved, lost = [], {p: [] for p in patiences}, {p: [] for p in patiences}
    for path in paths:
        for run in json.loads(Path(path).read_text())["rows"]:
            scores = [epoch[metric] for epoch in run["history"]]
            epochs, best_epoch = replay(scores, recorded, min_delta)
            if epochs != len(scores):
                raise ValueError(
                    f"{path}: {run['variant']} ran {len(scores)} epochs, but patience "
                    f"{recorded} with min_delta {min_delta:g} stops it at {epochs}: check "
                    "--recorded and --min-delta"
                )
            best = scores[best_epoch - 1]
            cells = [Path(path).parent.name, run["variant"], str(run.get("seed", "-"))]
            cells.append(f"{epochs} ({best_epoch}), {best:.4f}")
            for p in patiences:
                stop, kept = replay(scores, p, min_delta)
                saved[p].append(epochs - stop)
                lost[p].append(best - scores[kept - 1])
                cells.append(f"{stop} ({kept}), {best - scores[kept - 1]:.4f}")
            rows.append(cells)
    lines = markdown_table(columns, rows)
    for p in patiences:
        same = sum(loss == 0 for loss in lost[p])
        lines += [
            "",
            f"patience {p}: {sum(saved[p])} epochs fewer over {len(saved[p])} runs "
            f"(mean {sum(saved[p]) / len(saved[p]):.1f}, min {min(saved[p])}); same best epoch "
            f"in {same}; {metric} lost: max {max(lost[p]):.4f}, "
            f"mean {sum(lost[p]) / len(lost[p]):.5f}",
        ]
    return "\n".join(lines) + "\n"
