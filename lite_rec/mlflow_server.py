"""MLflow's tracking server as lite-rec runs it (`mlflow server --app-name lite-rec`): its UI
opens experiments in the model-training view in a browser that has not chosen a view.

MLflow 3.17.2's UI takes its view (GenAI or model training) from the page's `workflowType`
query parameter, else from the browser's localStorage (`mlflow.workflowType_v1`, written by
the sidebar's switch), else GenAI; it ignores the experiment's `mlflow.experimentKind` tag.
The index page served here stores "machine_learning" before MLflow's bundle runs, only where
the browser holds no choice, so a person's switch to GenAI stays theirs. Everything else is
MLflow's own server. The app is registered under the `mlflow.app` entry point `lite-rec`
(pyproject.toml); it cannot be combined with MLflow's `basic-auth` app."""

import json
from pathlib import Path

from flask import Response
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app  # what `mlflow server` serves under uvicorn

WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"
MODEL_TRAINING = json.dumps("machine_learning")  # localStorage holds the choice as JSON
DEFAULT_VIEW_SCRIPT = (
    f"<script>if (localStorage.getItem('{WORKFLOW_TYPE_KEY}') === null) "
    f"localStorage.setItem('{WORKFLOW_TYPE_KEY}', '{MODEL_TRAINING}');</script>"
)
# MLflow's index page with the default-view script first in its head, read once per worker.
INDEX_PAGE = (
    (Path(flask_app.static_folder) / "index.html")
    .read_text()
    .replace("<head>", "<head>" + DEFAULT_VIEW_SCRIPT, 1)
)


def serve_index() -> Response:
    return Response(INDEX_PAGE, mimetype="text/html")


flask_app.view_functions["serve"] = serve_index
__all__ = ["app"]
