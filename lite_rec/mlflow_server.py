"""MLflow's tracking server as lite-rec runs it (`mlflow server --app-name lite-rec`): its UI
opens experiments in the model-training view, with lite-rec's runs-table columns, in a browser
that has not chosen otherwise.

MLflow 3.17.2's UI takes its view (GenAI or model training) from the page's `workflowType`
query parameter, else from the browser's localStorage (`mlflow.workflowType_v1`, written by
the sidebar's switch), else GenAI; it ignores the experiment's `mlflow.experimentKind` tag. The
runs table's columns and sort it keeps per experiment in localStorage too
(`MLflowLocalStorage-1.1-ExperimentPage-["ID"]-ReactComponentState`), and a saved view
(`lite_rec.tracking.RUNS_VIEW_TAG`) applies only through a link's `viewStateShareKey`, which
the UI's own links and redirects drop. So the index page served here starts with a script,
run before MLflow's bundle, that stores "machine_learning" as the view and, for every
experiment holding lite-rec's saved view, that view's columns and sort as the experiment's
table state, each only where the browser holds nothing yet, so a person's own choices stay
theirs. Everything else is MLflow's own server. The app is registered under the `mlflow.app`
entry point `lite-rec` (pyproject.toml); it cannot be combined with MLflow's `basic-auth` app."""

import json
import logging
from pathlib import Path

from flask import Response
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app  # what `mlflow server` serves under uvicorn
from mlflow.server.handlers import _get_tracking_store

from lite_rec.tracking import RUNS_VIEW_TAG

log = logging.getLogger(__name__)

WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"
MODEL_TRAINING = json.dumps("machine_learning")  # localStorage holds the choice as JSON
TABLE_STATE_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"
MAX_EXPERIMENTS = 1000  # experiments whose table state one page load may store
INDEX_HTML = (Path(flask_app.static_folder) / "index.html").read_text()


def table_state_key(experiment_id: str) -> str:
    """Where MLflow's UI keeps the runs table of one experiment (its ids as JSON.stringify
    writes them)."""
    return TABLE_STATE_KEY.format(ids=json.dumps([experiment_id], separators=(",", ":")))


def lite_rec_table_states() -> dict[str, str]:
    """localStorage key -> lite-rec's saved runs-table state, for each experiment that holds
    the view; empty where the tracking store cannot be read (the page then opens with MLflow's
    default columns, and the error is logged)."""
    try:
        experiments = _get_tracking_store().search_experiments(
            max_results=MAX_EXPERIMENTS, filter_string=f"tags.`{RUNS_VIEW_TAG}` LIKE '%'"
        )
    except Exception:  # the UI must load whatever the store says
        log.exception("lite-rec runs view: cannot list the experiments holding it")
        return {}
    states = {}
    for experiment in experiments:
        try:
            states[table_state_key(experiment.experiment_id)] = json.loads(
                experiment.tags[RUNS_VIEW_TAG]
            )["state"]
        except (KeyError, TypeError, ValueError):
            log.warning("experiment %s: malformed %s tag", experiment.experiment_id, RUNS_VIEW_TAG)
    return states


def default_view_script(table_states: dict[str, str]) -> str:
    """The script that stores the model-training view and each experiment's table state where
    the browser holds none. The states are tag values anyone with API access can write: as a
    JSON literal with `<` escaped, they cannot end the script element."""
    states = json.dumps(table_states).replace("<", "\\u003c")
    return (
        "<script>(function () {"
        f"if (localStorage.getItem('{WORKFLOW_TYPE_KEY}') === null) "
        f"localStorage.setItem('{WORKFLOW_TYPE_KEY}', '{MODEL_TRAINING}');"
        f"var states = {states};"
        "for (var key in states) if (localStorage.getItem(key) === null) "
        "localStorage.setItem(key, states[key]);"
        "})();</script>"
    )


def serve_index() -> Response:
    """MLflow's index page with the default-view script first in its head, so that it runs
    before MLflow's bundle reads the stored choices."""
    script = default_view_script(lite_rec_table_states())
    return Response(INDEX_HTML.replace("<head>", "<head>" + script, 1), mimetype="text/html")


flask_app.view_functions["serve"] = serve_index
__all__ = ["app"]
