"""Reporting to Dagster when Dagster Pipes launched this training (the `rec_model` asset, through
its `TrainingLauncher` resource): each epoch as a log line in the Dagster run and a custom
message, then the trained model's validation metrics, best epoch, MLflow run and model URI as
the asset's materialization. The launcher's extras give the MLflow run's tags (the Dagster run
id). Only rank 0 of a data-parallel run reports, as only it logs to MLflow; outside Pipes
nothing is reported and `dagster_pipes` (the dependency-free protocol package Dagster ships
for external processes) is not imported."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lite_rec import distributed

if TYPE_CHECKING:
    from lite_rec.pipeline import TrainedModel

CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"  # set by every Pipes client for the process it starts
EPOCH_MESSAGE = "epoch"  # the key of an epoch row in a custom message
DIGITS = 4  # metrics as a person reads them in the UI


def launched_by_pipes() -> bool:
    return CONTEXT_ENV in os.environ


class TrainingReport:
    """What one training reports through an open Pipes connection."""

    def __init__(self, pipes: Any) -> None:
        self.pipes = pipes

    @property
    def tags(self) -> dict[str, str]:
        """The MLflow run's tags the launcher asked for."""
        return {str(k): str(v) for k, v in (self.pipes.extras.get("tags") or {}).items()}

    def epoch(self, row: dict[str, Any]) -> None:
        shown = {k: round(v, DIGITS) if isinstance(v, float) else v for k, v in row.items()}
        self.pipes.log.info(", ".join(f"{k} {v}" for k, v in shown.items()))  # epoch 1, loss ...
        self.pipes.report_custom_message({EPOCH_MESSAGE: row})

    def trained(self, trained: TrainedModel) -> None:
        metrics = {f"valid {k}": round(v, DIGITS) for k, v in trained.valid_metrics.items()}
        self.pipes.report_asset_materialization(
            metadata={
                **metrics,
                "best epoch": trained.best_epoch,
                "mlflow run id": trained.run_id,
                "model uri": trained.model_uri,
                "training seconds": round(trained.seconds, 1),
            }
        )


@contextmanager
def training_report() -> Iterator[TrainingReport | None]:
    """The open Pipes report of this process when Dagster launched it and it is rank 0 (inside
    `distributed.process_group`), else None."""
    if not launched_by_pipes() or not distributed.is_main():
        yield None
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        yield TrainingReport(pipes)
