"""The two jobs: the pipeline (what `make run`, the nightly schedule and the catalog sensor
run) and the benchmark, which stays out of it."""

import dagster as dg

BENCHMARK_GROUP = "benchmark"
# Runs with this tag (every pipeline run) share one slot in docker/dagster.yaml's run queue;
# the registry lock guards the champion for runs launched outside the queue too.
RETRAIN_TAGS = {"lite_rec/retrain": "true"}

# Raw files to a gated champion: every asset but the benchmark (hours on a CPU).
PIPELINE = dg.AssetSelection.all() - dg.AssetSelection.groups(BENCHMARK_GROUP)

main_job = dg.define_asset_job(
    "main_job",
    selection=PIPELINE,
    tags=RETRAIN_TAGS,
    description=(
        "The pipeline: ingest, validate, filter, split, embed, train, index, evaluate, register "
        "and gate. `make run`, the nightly schedule and the catalog sensor run it."
    ),
)
benchmark_job = dg.define_asset_job(
    "benchmark_job",
    selection=dg.AssetSelection.groups(BENCHMARK_GROUP),
    description="Every model and ablation on the same splits (lite-rec bench); hours on a CPU.",
)
