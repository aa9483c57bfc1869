"""Keeping the model current: a nightly schedule, and a sensor that requests a run of the
pipeline when the raw catalog (items or interactions) changes."""

import hashlib
from pathlib import Path

import dagster as dg

from lite_rec.ingest import FORMATS
from orchestration.jobs import RETRAIN_TAGS, main_job
from orchestration.resources import Settings

DEFAULT_CRON = "0 2 * * *"


def raw_dataset_files(directory: Path, format: str = "auto") -> list[Path]:
    """The item and interaction files of a dataset directory, as the readers find them."""
    formats = FORMATS.values() if format == "auto" else [FORMATS[format]]
    patterns = {pattern for spec in formats for pattern in spec.items + spec.interactions}
    return sorted({path for pattern in patterns for path in directory.glob(pattern)})


def catalog_digest(directory: Path, format: str = "auto") -> str:
    """sha256 over the names and contents of the raw item and interaction files."""
    digest = hashlib.sha256()
    for path in raw_dataset_files(directory, format):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def retrain_schedule(cron: str = DEFAULT_CRON, timezone: str = "UTC") -> dg.ScheduleDefinition:
    """Retrain on a cron (default nightly at 02:00 UTC); runs whenever the daemon runs."""
    return dg.ScheduleDefinition(
        name="nightly_retrain",
        job=main_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrain, evaluate and gate the model on cron {cron!r} ({timezone}).",
    )


@dg.sensor(
    job=main_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain when the item or interaction files of the dataset (data.source) change.",
)
def catalog_changed(context: dg.SensorEvaluationContext, settings: Settings):
    """Request a retrain when the raw files' digest differs from the cursor (the digest of
    the last catalog seen). The first evaluation only records the digest: training the
    current catalog is the schedule's or `make run`'s work. The run reads the same `settings`,
    so it trains the dataset this sensor watched. Each skip says why on the sensor's tick."""
    directory, format = settings.dataset_dir(), settings.load_config().data.format
    if not raw_dataset_files(directory, format):
        return dg.SkipReason(f"no item or interaction files under {directory}")
    digest = catalog_digest(directory, format)
    if context.cursor == digest:
        return dg.SkipReason(f"catalog unchanged ({digest[:12]})")
    first_look = context.cursor is None
    context.update_cursor(digest)
    if first_look:
        return dg.SkipReason(f"first look at the catalog: recorded {digest[:12]}")
    return dg.RunRequest(run_key=digest, tags=RETRAIN_TAGS)
