"""The browser check passes: after a short pipeline run on the embedded MovieLens, the Dagster
and MLflow UIs show the metrics, the champion and the gate's decision as text in headless
Chromium (tests/browser/ui_check.py, `make ui-check`), and every server stops."""

from pathlib import Path

import pytest
from PIL import Image

from lite_rec.config import load_config, project_path
from tests.browser.browser import HEIGHT, WIDTH, missing_reason
from tests.browser.ui_check import DEFAULT_SETTINGS, check

MAX_SCREENSHOT_BYTES = 200_000


@pytest.mark.slow
def test_the_uis_show_the_metrics_the_champion_and_the_gate_decision(tmp_path: Path) -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(f"!!! the browser check is SKIPPED: {reason}")
    visits = check(tmp_path, project_path(load_config().data.source), DEFAULT_SETTINGS)
    failures = [visit.failure for visit in visits if visit.failure]
    assert not failures, "\n".join(failures)
    assert len(visits) == len({visit.page.name for visit in visits}) >= 10
    for visit in visits:
        with Image.open(visit.screenshot) as image:
            assert image.size == (WIDTH, HEIGHT), visit.page.name
        assert visit.screenshot.stat().st_size < MAX_SCREENSHOT_BYTES, visit.page.name
