"""`mlflow server --app-name lite-rec` for real: MLflow's server on a free 127.0.0.1 port whose
index page stores the model-training view and lite-rec's runs-table columns for a browser
without a choice, and whose API is MLflow's own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import requests

from lite_rec.mlflow_server import default_view_script, table_state_key
from lite_rec.tracking import RUNS_VIEW_STATE, RUNS_VIEW_TAG, Tracking
from tests.services import free_port, stop_process_group, wait_until_healthy


def test_the_table_state_key_is_the_one_mlflows_ui_reads() -> None:
    # As MLflow's UI writes it for one experiment: JSON.stringify(["7"]), no spaces.
    assert table_state_key("7") == 'MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'


def test_a_tag_value_cannot_end_the_script_element() -> None:
    script = default_view_script({table_state_key("1"): '{"x": "</script><script>alert(1)"}'})
    assert script.count("</script>") == 1 and script.endswith("</script>")
    assert "\\u003c/script>\\u003cscript>alert(1)" in script


@pytest.mark.slow
def test_the_lite_rec_app_serves_mlflow_with_the_training_view_first(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracking(store, "lite_rec").activate()  # tags the experiment with lite-rec's runs view
    client = mlflow.MlflowClient(store)
    lite_rec = client.get_experiment_by_name("lite_rec").experiment_id
    other = client.create_experiment("someone else's", tags={"team": "search"})
    port = free_port()
    mlflow_command = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow_command, "server", "--app-name", "lite-rec", "--workers", "1"]
    command += ["--backend-store-uri", store, "-h", "127.0.0.1", "-p", str(port)]
    log_file = tmp_path / "mlflow.log"
    with open(log_file, "w") as output:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/health", process, log_file=log_file)
        page = requests.get(f"{url}/", timeout=30)
        assert page.status_code == 200
        head = page.text.split("</head>")[0]
        # First in the head: it runs before MLflow's bundle reads the stored choices.
        expected = default_view_script({table_state_key(lite_rec): RUNS_VIEW_STATE})
        assert head.startswith('<!doctype html><html lang="en"><head>' + expected)
        states = json.loads(re.search(r"var states = (\{.*?\});", head).group(1))
        assert states == {table_state_key(lite_rec): RUNS_VIEW_STATE}  # not `other`'s
        assert "static-files/static/js/main." in head  # MLflow's own page around it
        # A view tagged later is on the next page load: the page is built per request.
        view = json.loads(client.get_experiment(lite_rec).tags[RUNS_VIEW_TAG])
        client.set_experiment_tag(other, RUNS_VIEW_TAG, json.dumps({**view, "state": "{}"}))
        again = requests.get(f"{url}/", timeout=30).text
        states = json.loads(re.search(r"var states = (\{.*?\});", again).group(1))
        assert states == {table_state_key(lite_rec): RUNS_VIEW_STATE, table_state_key(other): "{}"}
        experiments = requests.get(
            f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 10}, timeout=30
        )
        assert experiments.status_code == 200
        names = {e["name"] for e in experiments.json()["experiments"]}
        assert names == {"Default", "lite_rec", "someone else's"}
    finally:
        stop_process_group(process)
