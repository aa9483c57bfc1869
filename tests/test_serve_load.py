"""`lite-rec bench serve-load`: a model trained on a tiny dataset, registered, served by
`lite-rec serve` and driven by concurrent clients; the table and the rows it writes."""

import json

from lite_rec.cli import main
from tests.conftest import write_movielens


def test_serve_load_drives_lite_rec_serve_and_writes_its_table(tmp_path) -> None:
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    out = tmp_path / "out"
    args = ["bench", "serve-load", "--source", str(source), "--set", "model.hidden_size=16"]
    args += ["--only", "lite-rec serve", "--clients", "2", "--seconds", "1"]
    args += ["--warmup-seconds", "0.5", "--max-requests", "50", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    [row] = results["rows_measured"]
    assert row["server"] == "lite-rec serve" and row["clients"] == 2
    assert 0 < row["requests"] <= 50 and row["errors"] == 0  # bounded by --max-requests
    assert row["p50_ms"] <= row["p99_ms"] and row["server_peak_rss_mb"] > 0
    assert (
        "lite-rec serve --model lite_rec_serve_load@champion"
        in results["servers"]["lite-rec serve"]
    )
    assert f"| lite-rec serve | 2 | {row['requests']} |" in (out / "results.md").read_text()
