"""`mlflow server --app-name lite-rec` for real: MLflow's server on a free 127.0.0.1 port whose
index page stores the model-training view for a browser without a choice, and whose API is
MLflow's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from lite_rec.mlflow_server import DEFAULT_VIEW_SCRIPT
from tests.services import free_port, stop_process_group, wait_until_healthy


@pytest.mark.slow
def test_the_lite_rec_app_serves_mlflow_with_the_training_view_first(tmp_path: Path) -> None:
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "server", "--app-name", "lite-rec", "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
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
        # First in the head: it runs before MLflow's bundle reads the stored view.
        assert head.startswith('<!doctype html><html lang="en"><head>' + DEFAULT_VIEW_SCRIPT)
        assert "static-files/static/js/main." in head  # MLflow's own page around it
        experiments = requests.get(
            f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 10}, timeout=30
        )
        assert experiments.status_code == 200
        assert [e["name"] for e in experiments.json()["experiments"]] == ["Default"]
    finally:
        stop_process_group(process)
