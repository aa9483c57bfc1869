"""Figures people would rather look at than read: learning curves and metric tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and validation NDCG@10 / Recall@10 per epoch, as a PNG."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_axis.plot(epochs, [row["loss"] for row in history], marker="o", ms=3)
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    for key in ("valid_ndcg@10", "valid_recall@10"):
        metric_axis.plot(epochs, [row[key] for row in history], marker="o", ms=3, label=key)
    metric_axis.set(title="validation (full ranking)", xlabel="epoch")
    metric_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def metrics_table(rows: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """A table image: one row per name (split or model), one column per metric."""
    names = list(rows)
    columns = list(next(iter(rows.values())))
    cells = [[f"{rows[name][c]:.4f}" for c in columns] for name in names]
    figure, axis = plt.subplots(figsize=(1.2 + 1.1 * len(columns), 0.6 + 0.35 * len(names)))
    axis.axis("off")
    table = axis.table(cellText=cells, rowLabels=names, colLabels=columns, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
