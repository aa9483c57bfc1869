"""`python -m tests.browser.ui_check --out DIR` (`make ui-check`): what a person sees in the
Dagster and MLflow UIs after a short pipeline run, checked in headless Chromium.

It starts `dagster dev` (as `make dev`) and `mlflow server` on free ports of 127.0.0.1, each in
its own process group, on a temporary DAGSTER_HOME and MLflow sqlite store, runs `main_job` into
them as `make run` does (`python -m orchestration.launch`, 2 epochs by default), and opens the asset
graph, the timeline, main_job's runs, `rec_model`, `evaluation`, `registered_model`, two asset
checks, the automation page, and MLflow's experiment, run, registered model and model version;
then, in a browser that holds no MLflow choices (as a new one), the experiment's plain page, as
MLflow's experiment list links it (`mlflow server --app-name lite-rec` opens it in the
model-training view with lite-rec's metric columns). Each page must show, as text, what the
stores hold: the validation and test metrics rounded to 4 digits, the MLflow links, the
champion's URI and alias, the gate's decision, the Dagster run id on the MLflow run, the run and
its metrics on the plain page. A screenshot of each page goes to DIR. Every server is stopped by
PID, whatever happens; the exit code is 1 when a page misses a text, and the report names the
page and the text."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import requests
import yaml

from lite_rec.config import load_config, project_path
from lite_rec.registry import CHAMPION
from lite_rec.tracking import EXPERIMENT, experiment_url, model_version_url, run_url
from tests.browser import servers
from tests.browser.browser import Page, Visit, chromium, visit

DEFAULT_SETTINGS = ["train.epochs=2"]
PIPELINE_ASSETS = ["raw_items", "raw_interactions", "item_embeddings", "rec_model"]
PIPELINE_ASSETS += ["evaluation", "registered_model"]
ENVIRONMENT = {  # as the Makefile exports it
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}
QUERY = """{
  repositoriesOrError { ... on RepositoryConnection { nodes {
    location { name } assetGroups { groupName } } } }
  runsOrError(filter: {pipelineName: "main_job"}, limit: 1) { ... on Runs { results { runId } } }
}"""


@dataclass
class Facts:
    """What the stores hold after the run, which the pages must show."""

    location: str  # the Dagster code location
    asset_groups: list[str]
    dagster_run_id: str
    experiment_id: str
    run_id: str
    run_name: str
    metrics: dict[str, float]  # the MLflow run's
    model_name: str
    version: str
    decision: str  # the gate's: promoted or rejected


def shown(value: float) -> str:
    """A metric rounded to 4 digits as the UI prints the number (0.5, not 0.5000)."""
    return f"{round(value, 4):.4f}".rstrip("0").rstrip(".")


def pages(facts: Facts, dagster: str, mlflow_ui: str) -> list[Page]:
    """The pages a person reads after a run, and the text each must show."""
    groups = ",".join(f"global@global:{group}" for group in facts.asset_groups)
    valid = shown(facts.metrics["valid_ndcg_at_10"])
    full_valid = str(facts.metrics["valid_ndcg_at_10"])  # MLflow prints every digit
    test = [shown(facts.metrics[f"test_{m}_at_10"]) for m in ("ndcg", "recall")]
    run = run_url(mlflow_ui, facts.experiment_id, facts.run_id)
    version = model_version_url(mlflow_ui, facts.model_name, facts.version)
    champion_uri = f"models:/{facts.model_name}@{CHAMPION}"
    alias = f"@ {CHAMPION}"  # MLflow's alias tag on a version
    models = f"{mlflow_ui}/#/models/{facts.model_name}"
    split_rules = ["every user has one test item", "no test item in the user's training part"]
    return [
        Page("dagster-asset-graph", f"{dagster}/asset-groups?expanded={groups}", PIPELINE_ASSETS),
        Page("dagster-timeline", f"{dagster}/overview/activity/timeline", ["main_job"]),
        Page(
            "dagster-main-job-runs",
            f"{dagster}/locations/{facts.location}/jobs/main_job/runs",
            [facts.dagster_run_id[:8]],
        ),
        Page("dagster-rec-model", f"{dagster}/assets/rec_model", [valid, run], focus=valid),
        Page("dagster-evaluation", f"{dagster}/assets/evaluation", [*test, run], focus=test[0]),
        Page(
            "dagster-registered-model",
            f"{dagster}/assets/registered_model",
            ["gate_decision", facts.decision, champion_uri, version],
            focus="gate_decision",
        ),
        Page(
            "dagster-check-expectations",
            f"{dagster}/assets/raw_interactions?view=checks",
            ["expectations", "Passed", "expect_column_values_to_not_be_null"],
        ),
        Page(
            "dagster-check-split",
            f"{dagster}/assets/loo_splits?view=checks",
            ["leave_one_out", "Passed", *split_rules],
        ),
        Page("dagster-automation", f"{dagster}/automation", ["catalog_changed", "nightly_retrain"]),
        Page(
            "mlflow-experiment",
            experiment_url(mlflow_ui, facts.experiment_id),
            [facts.run_name, "valid_ndcg_at_10", "valid_recall_at_10", full_valid],
        ),
        Page(
            "mlflow-run",
            run,
            [facts.run_name, "valid_ndcg_at_10", full_valid]
            + ["dagster.run_id", facts.dagster_run_id, "lite_rec.gate_decision", facts.decision],
            focus="valid_ndcg_at_10",
        ),
        Page(
            "mlflow-registered-model",
            models,
            [f"Version {facts.version}", alias],
            focus=f"Version {facts.version}",
        ),
        Page("mlflow-model-version", version, [alias, facts.decision]),
    ]


def landing_page(facts: Facts, mlflow_ui: str) -> Page:
    """The experiment's page as MLflow's experiment list links it, no view in the link, in a
    browser that holds no choice: the runs table with lite-rec's metric columns
    (`lite_rec.mlflow_server` stores the model-training view and lite-rec's columns where the
    browser has none; MLflow alone opens GenAI's overview)."""
    plain = f"{mlflow_ui}/#/experiments/{facts.experiment_id}"
    full_valid = str(facts.metrics["valid_ndcg_at_10"])  # MLflow prints every digit
    texts = [facts.run_name, "valid_ndcg_at_10", "test_ndcg_at_10", full_valid]
    return Page("mlflow-experiment-landing", plain, texts, focus=facts.run_name)


def forget_view_choice(driver, mlflow_ui: str) -> None:
    """Empty the browser's localStorage for MLflow (the view its sidebar switch chose, each
    experiment's runs-table columns), so that the next page loads as in a new browser. The
    page is left, so that the next one loads the UI afresh."""
    driver.get(mlflow_ui)
    driver.execute_script("localStorage.clear()")
    driver.get("about:blank")


def graphql(dagster: str, query: str) -> dict:
    response = requests.post(f"{dagster}/graphql", json={"query": query}, timeout=60)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise AssertionError(f"Dagster GraphQL: {body['errors']}")
    return body["data"]


def read_facts(dagster: str, tracking_uri: str) -> Facts:
    """The run, metrics, model version and gate decision, from Dagster's GraphQL and MLflow."""
    data = graphql(dagster, QUERY)
    [repository] = data["repositoriesOrError"]["nodes"]
    [dagster_run] = data["runsOrError"]["results"]
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise AssertionError(f"no MLflow experiment {EXPERIMENT!r} in {tracking_uri}")
    [run] = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    [registered] = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    return Facts(
        location=repository["location"]["name"],
        asset_groups=sorted(group["groupName"] for group in repository["assetGroups"]),
        dagster_run_id=dagster_run["runId"],
        experiment_id=experiment.experiment_id,
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        metrics=run.data.metrics,
        model_name=registered.name,
        version=str(registered.version),
        decision=registered.tags.get("gate_decision", "(no gate_decision tag on the version)"),
    )


def run_config(source: Path, settings: list[str], root: Path, mlflow_ui: str) -> dict:
    """`main_job`'s run config: the dataset and settings, outputs under `root`, links to the
    MLflow UI."""
    overrides = [f"data.source={source}", *settings]
    return {
        "resources": {
            "settings": {"config": {"overrides": overrides, "mlflow_ui_url": mlflow_ui}},
            "workspace": {"config": {"root": str(root)}},
        }
    }


def check(
    out_dir: Path, source: Path, settings: list[str], page_seconds: float = 60
) -> list[Visit]:
    """Start the UIs, run the pipeline into them, visit every page; the visits, with what each
    page missed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lite-rec-ui-check-"))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    tracking_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, **ENVIRONMENT, "DAGSTER_HOME": str(home)}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    mlflow_server = ["mlflow", "server", "--app-name", "lite-rec", "--workers", "1"]
    mlflow_server += ["--backend-store-uri", tracking_uri]
    dagster_dev = ["dagster", "dev", "-h", "127.0.0.1", "-p", "{port}"]  # as `make dev`
    started: list[servers.ProcessGroup] = []
    driver = None
    try:
        clock = time.monotonic()
        ui = servers.start("mlflow", [*mlflow_server, "-h", "127.0.0.1", "-p", "{port}"], env, root)
        started.append(ui)
        started.append(dagster := servers.start("dagster", dagster_dev, env, root))
        # Up before the run: each creates its store's tables, which the run would race.
        ui.wait_until_up("/health", seconds=180)
        dagster.wait_until_up("/server_info", seconds=300)
        print(f"servers up: {time.monotonic() - clock:.0f} s", flush=True)
        config = root / "run_config.yaml"
        config.write_text(yaml.safe_dump(run_config(source, settings, root, ui.url)))
        launch = [sys.executable, "-m", "orchestration.launch", "main_job", "-c", str(config)]
        started.append(run := servers.start("pipeline", launch, env, root))  # as `make run`
        run.wait(seconds=1800)
        print(f"pipeline run: {time.monotonic() - clock:.0f} s", flush=True)
        graphql(dagster.url, "mutation { setNuxSeen }")  # no community dialog over the pages
        facts = read_facts(dagster.url, tracking_uri)
        driver = chromium()
        visits = []
        for page in pages(facts, dagster.url, ui.url):
            visits.append(visit(driver, page, out_dir, page_seconds))
            print(report_line(visits[-1]), flush=True)
        forget_view_choice(driver, ui.url)
        visits.append(visit(driver, landing_page(facts, ui.url), out_dir, page_seconds))
        print(report_line(visits[-1]), flush=True)
        return visits
    finally:
        if driver is not None:
            driver.quit()
        for group in reversed(started):
            stopping = time.monotonic()
            killed = group.stop()
            print(f"{group.name} stopped in {time.monotonic() - stopping:.0f} s", flush=True)
            if killed:
                print(f"!!! {group.name} outlived SIGTERM: killed PIDs {killed}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


def report_line(visit: Visit) -> str:
    size = visit.screenshot.stat().st_size / 1024
    verdict = visit.failure or "shows " + ", ".join(repr(text) for text in visit.page.texts)
    return f"{visit.page.name:28} {visit.seconds:5.1f} s {size:4.0f} KB  {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.ui_check", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    parser.add_argument("--source", help="dataset directory (default: params.yaml data.source)")
    parser.add_argument(
        "--set", action="append", dest="settings", help=f"a setting (default {DEFAULT_SETTINGS})"
    )
    args = parser.parse_args(argv)
    source = project_path(args.source or load_config().data.source)
    started = time.monotonic()
    visits = check(args.out.resolve(), source, args.settings or DEFAULT_SETTINGS)
    failures = [v.failure for v in visits if v.failure]
    print(f"ui check: {len(visits)} pages in {time.monotonic() - started:.0f} s")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
