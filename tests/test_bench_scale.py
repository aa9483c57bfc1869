"""`lite-rec bench scale` end to end on a 300-item catalog: every stage's row, the report and
the plot, a rerun of one stage keeping the others, and the popularity baseline's ranking."""

import json

import numpy as np
import pytest

from lite_rec.bench.scale import (
    INTERACTIONS_PER_ITEM,
    PLOT_FILE,
    USERS_PER_ITEM,
    PopularityScores,
    ScaleSettings,
    run_scale,
)
from lite_rec.cli import main
from lite_rec.ranking import rank_catalog

ITEMS = 300
SETTINGS = ScaleSettings(
    train_steps=4,
    full_steps=3,
    embed_sample=32,
    eval_users=100,
    item_chunk=128,  # several chunks: the chunked path is the one measured at scale
    ann_users=50,
)


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    results = run_scale([ITEMS], root / "out", root / "work", SETTINGS)
    return root, results


def test_every_stage_has_its_measurements(scale_run):
    _, results = scale_run
    [row] = results["rows"]
    assert (row["items"], row["users"], row["interactions"]) == (
        ITEMS,
        USERS_PER_ITEM * ITEMS,
        INTERACTIONS_PER_ITEM * ITEMS,
    )
    stages = row["stages"]
    assert set(stages) == {
        "synth",
        "prepare_duckdb",
        "prepare_pandas",
        "embed",
        "train_sampled",
        "train_full",
        "evaluate",
        "ann",
    }
    assert not [name for name, cell in stages.items() if "error" in cell]
    assert stages["synth"]["cached"] is False
    for name, cell in stages.items():
        if name != "synth":
            assert cell["peak_rss_mib"] > 100, name  # a process that imported numpy at least
    # Both engines wrote the same dataset.
    assert stages["prepare_duckdb"]["stats"] == stages["prepare_pandas"]["stats"]
    assert stages["embed"]["items"] == 32 and stages["embed"]["items_per_second"] > 0
    sampled, full = stages["train_sampled"], stages["train_full"]
    assert (sampled["loss"], sampled["steps"], sampled["timed_steps"]) == ("sampled", 4, 2)
    assert (full["loss"], full["steps"]) == ("ce", 3)
    assert sampled["seconds_per_1000_steps"] > 0 and full["seconds_per_1000_steps"] > 0
    evaluation = stages["evaluate"]
    assert evaluation["users"] == 100 and evaluation["users_per_second"] > 0
    for scorer in ("model", "popularity"):
        metrics = evaluation["test"][scorer]
        assert 0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1
    ann = stages["ann"]
    assert ann["kind"] == "hnsw" and 0 < ann["recall@10"] <= 1 and ann["recall_users"] == 50
    assert ann["speedup"] == pytest.approx(
        ann["index_users_per_second"] / ann["exact_users_per_second"]
    )


def test_the_report_and_the_plot_are_written(scale_run):
    root, results = scale_run
    out = root / "out"
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    markdown = (out / "results.md").read_text()
    assert "| items | interactions | items after 5-core | prepare duckdb s |" in markdown
    kept = results["rows"][0]["stages"]["prepare_duckdb"]["stats"]["items"]
    assert f"| 300 | 6,000 | {kept} |" in markdown and "Failed cells" not in markdown
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_of_one_stage_keeps_the_others(scale_run):
    root, results = scale_run
    before = results["rows"][0]["stages"]
    again = run_scale([ITEMS], root / "out", root / "work", SETTINGS, stages=["evaluate"])
    after = again["rows"][0]["stages"]
    assert set(after) == set(before)
    assert after["train_sampled"] == before["train_sampled"]
    assert after["evaluate"]["test"] == before["evaluate"]["test"]  # the same saved model


def test_the_cli_passes_the_index_settings_on(scale_run, capsys):
    root, _ = scale_run
    command = ["bench", "scale", "--sizes", str(ITEMS), "--stages", "ann", "--ann-users", "20"]
    command += ["--ann-kind", "ivf", "--ann-nlist", "10", "--ann-nprobe", "3"]
    assert main([*command, "--out", str(root / "out"), "--work", str(root / "work")]) == 0
    [row] = json.loads((root / "out" / "results.json").read_text())["rows"]
    ann = row["stages"]["ann"]
    assert (ann["kind"], ann["params"], ann["recall_users"]) == (
        "ivf",
        {"nlist": 10, "nprobe": 3},
        20,
    )
    assert "| nlist 10, nprobe 3 |" in capsys.readouterr().out


def test_the_cli_names_an_unknown_stage(tmp_path, capsys):
    code = main(
        ["bench", "scale", "--sizes", "300", "--stages", "prepare,serve"]
        + ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    )
    assert code == 2
    assert "--stages: expected some of prepare, embed, train, evaluate, ann, got ['serve']" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "work").exists()


def test_popularity_ranks_by_training_counts_without_the_history():
    popularity = PopularityScores(np.array([5, 1, 3, 3]))
    ranking = rank_catalog(popularity, [np.array([0])], np.array([1]), k=2, item_chunk=2)
    # Items 2 and 3 tie at 3 (lower index first); item 0 is the history's.
    assert ranking.top_items.tolist() == [[2, 3]]
    assert ranking.ranks.tolist() == [3]  # items 2 and 3 score above item 1
