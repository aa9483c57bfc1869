"""The approximate item index: its answers against exact ranking, history exclusion, the exact
fallback, stale files, the command line, the Recommender, the pyfunc and the Dagster asset."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lite_rec import ann
from lite_rec.cli import INDEX_KINDS, INDEX_OPTIONS, build_parser, main
from lite_rec.config import ModelConfig
from lite_rec.errors import InputError
from lite_rec.evaluate import recommend as exact_recommend
from lite_rec.model import RecommendationLLM
from lite_rec.model_io import load_model, save_model
from lite_rec.serving import Recommender, write_catalog
from tests.conftest import cyclic_data

N_ITEMS = 2000
EXHAUSTIVE = ann.IndexConfig(kind="hnsw", ef_search=N_ITEMS)  # visits every item: exact
# Every partition searched and every item scored in float: exact.
EXHAUSTIVE_SCANN = ann.IndexConfig(kind="scann", nlist=20, nprobe=20, reorder=N_ITEMS)


def random_model(tie_output: bool = True, seed: int = 0) -> RecommendationLLM:
    """An untrained ID model of N_ITEMS items; untied, with a bias wide enough to reorder."""
    torch.manual_seed(seed)
    config = ModelConfig(
        item_repr="id", hidden_size=16, num_layers=1, dropout=0.0, max_len=8, tie_output=tie_output
    )
    model = RecommendationLLM(config, N_ITEMS).eval()
    with torch.no_grad():
        model.items.id_embedding.weight[1:].normal_()
        if model.output is not None:
            model.output.bias.normal_(std=3.0)
    return model


@pytest.fixture(scope="module")
def data():
    return cyclic_data(N_ITEMS, 300, min_length=6, spread=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data) -> Path:
    """A model folder as `lite-rec train` writes it for serving, without an index."""
    directory = tmp_path_factory.mktemp("model")
    save_model(random_model(), directory)
    write_catalog(data, directory)
    return directory


def copy_of(model_dir: Path, folder: Path) -> Path:
    """A model folder of its own for a test that writes an index into it."""
    folder.mkdir()
    for file in ("model.pt", "model_config.json", "catalog.json"):
        (folder / file).write_bytes((model_dir / file).read_bytes())
    return folder


def histories(count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ITEMS, size=rng.integers(1, 9), replace=False) for _ in range(count)]


@pytest.mark.parametrize("config", [EXHAUSTIVE, EXHAUSTIVE_SCANN], ids=["hnsw", "scann"])
@pytest.mark.parametrize("tie_output", [True, False])
def test_an_index_that_visits_every_item_gives_the_exact_top_k(tie_output, config) -> None:
    model = random_model(tie_output)
    index = ann.build_index(model, config, histories(50), sample_users=50)
    queries = histories(200, seed=2)
    found, found_scores = ann.recommend(model, index, queries, k=10)
    exact, exact_scores = exact_recommend(model, queries, k=10)
    np.testing.assert_array_equal(found, exact)
    np.testing.assert_allclose(found_scores, exact_scores, rtol=1e-5, atol=1e-5)
    assert index.info["recall@10"] == 1.0 and index.info["recall_users"] == 50


def test_the_default_index_finds_nearly_all_of_the_exact_top_10() -> None:
    model = random_model(tie_output=False)
    for kind in ann.KINDS:
        index = ann.build_index(model, ann.IndexConfig(kind=kind), sample_users=300)
        assert index.info["recall@10"] >= 0.95, index.info


@pytest.mark.parametrize("config", [EXHAUSTIVE, EXHAUSTIVE_SCANN], ids=["hnsw", "scann"])
def test_history_items_are_never_returned_even_when_they_score_best(config) -> None:
    model = random_model()
    index = ann.build_index(model, config, sample_users=10)
    queries = histories(300, seed=3)
    unfiltered, _ = exact_recommend(model, queries, k=10, exclude_history=False)
    best_seen = [row for row, history in enumerate(queries) if unfiltered[row][0] in history]
    assert len(best_seen) > 30  # the history's own items often score best: the case is real
    found, _ = ann.recommend(model, index, queries, k=10)
    for history, items in zip(queries, found, strict=True):
        assert not set(items) & set(history)


class FewCandidates(ann.ItemIndex):
    """An index that finds only items 0..2 (-1 for the rest), whatever the user."""

    def candidates(self, users: torch.Tensor, fetch: int) -> np.ndarray:
        items = np.full((len(users), fetch), -1, dtype=np.int64)
        items[:, :3] = [0, 1, 2]
        return items


def test_a_row_left_with_fewer_than_k_candidates_is_ranked_exactly() -> None:
    model = random_model()
    queries = [np.array([5, 6]), np.array([0, 7])]  # the second has seen a candidate
    found, scores = ann.recommend(model, FewCandidates(None, {}), queries, k=3)
    exact, exact_scores = exact_recommend(model, queries, k=3)
    candidate_scores = model.score(queries[:1])[0, :3].numpy()  # (3,)
    np.testing.assert_array_equal(found[0], np.argsort(-candidate_scores))
    np.testing.assert_allclose(scores[0], np.sort(candidate_scores)[::-1], rtol=1e-5)
    np.testing.assert_array_equal(found[1], exact[1])
    np.testing.assert_allclose(scores[1], exact_scores[1], rtol=1e-5, atol=1e-5)
    # k up to the catalog: a real IVF probe of one single-item cluster finds 1 item per user
    sparse = ann.build_index(model, ann.IndexConfig(kind="ivf", nlist=N_ITEMS, nprobe=1))
    found, _ = ann.recommend(model, sparse, queries, k=10)
    np.testing.assert_array_equal(found, exact_recommend(model, queries, k=10)[0])


def test_a_catalog_smaller_than_k_plus_the_history_gives_every_other_item() -> None:
    torch.manual_seed(0)
    config = ModelConfig(item_repr="id", hidden_size=16, num_layers=1, max_len=8)
    model = RecommendationLLM(config, 7).eval()
    index = ann.build_index(model, ann.IndexConfig(), sample_users=5)
    found, scores = ann.recommend(model, index, [np.array([1, 2, 3])], k=10)
    exact, exact_scores = exact_recommend(model, [np.array([1, 2, 3])], k=10)
    np.testing.assert_array_equal(found, exact)
    assert set(found[0][~np.isneginf(scores[0])]) == {0, 4, 5, 6}


def test_the_folder_index_serves_the_same_items_and_holds_its_recall(
    model_dir, tmp_path, data
) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    config = ann.IndexConfig(ef_search=N_ITEMS)
    info = ann.index_model_folder(folder, config, data, sample_users=100)
    written = json.loads((folder / ann.INDEX_INFO_FILE).read_text())
    assert written == info and (folder / ann.INDEX_FILE).is_file()
    assert written["recall@10"] == 1.0 and written["recall_k"] == 10
    assert written["recall_users"] == 100 and written["recall_queries"] == "validation histories"
    assert written["kind"] == "hnsw" and written["n_items"] == N_ITEMS
    assert written["params"] == {"m": 16, "ef_construction": 200, "ef_search": N_ITEMS}
    assert written["build_seconds"] > 0 and written["index_users_per_second"] > 0
    through_index, exact = Recommender.load(folder), Recommender.load(folder, exact=True)
    assert through_index.index is not None and exact.index is None
    requests = [[f"i{i}" for i in history] for history in histories(40, seed=4)]
    answers = through_index.recommend(requests, 10)
    assert [[item for item, _ in row] for row in answers] == [
        [item for item, _ in row] for row in exact.recommend(requests, 10)
    ]
    assert answers == through_index.recommend(requests, 10, exact=False)
    for request, row in zip(requests, answers, strict=True):
        assert len(row) == 10 and not set(request) & {item for item, _ in row}


def test_a_scann_index_replaces_a_faiss_one_in_the_folder_and_serves_through_it(
    model_dir, tmp_path, data
) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    ann.index_model_folder(folder, ann.IndexConfig(kind="ivf"), data, sample_users=20)
    info = ann.index_model_folder(folder, EXHAUSTIVE_SCANN, data, sample_users=100)
    assert (folder / ann.SCANN_FILE).is_file() and not (folder / ann.INDEX_FILE).exists()
    assert info["kind"] == "scann" and info["recall@10"] == 1.0
    assert info["params"] == {"nlist": 20, "nprobe": 20, "reorder": N_ITEMS}
    through_index, exact = Recommender.load(folder), Recommender.load(folder, exact=True)
    assert through_index.index is not None and through_index.index.kind == "scann"
    requests = [[f"i{i}" for i in history] for history in histories(40, seed=4)]
    assert [[item for item, _ in row] for row in through_index.recommend(requests, 10)] == [
        [item for item, _ in row] for row in exact.recommend(requests, 10)
    ]
    ann.index_model_folder(folder, ann.IndexConfig(), data, sample_users=20)
    assert (folder / ann.INDEX_FILE).is_file() and not (folder / ann.SCANN_FILE).exists()


def test_an_unreadable_scann_file_is_ignored_with_a_warning(model_dir, tmp_path, caplog) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    ann.index_model_folder(folder, ann.IndexConfig(kind="scann"), sample_users=10)
    (folder / ann.SCANN_FILE).write_bytes(b"not a tar")
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        assert ann.load_index(folder, load_model(folder)) is None
    assert f"{ann.SCANN_FILE} is unreadable" in caplog.text
    info = json.loads((folder / ann.INDEX_INFO_FILE).read_text())
    (folder / ann.INDEX_INFO_FILE).write_text(json.dumps({**info, "kind": "annoy"}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        assert ann.load_index(folder, load_model(folder)) is None
    assert "names kind 'annoy', not one of hnsw, ivf, scann" in caplog.text


def test_an_index_for_other_item_vectors_is_ignored_with_a_warning(
    model_dir, tmp_path, caplog
) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    info = ann.index_model_folder(folder, ann.IndexConfig(), sample_users=20)
    assert info["recall_queries"] == "random histories drawn by training popularity"
    save_model(random_model(seed=1), folder)  # retrained: other weights, same shapes
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        recommender = Recommender.load(folder)
    assert recommender.index is None
    assert (
        "built for other item vectors" in caplog.text and f"lite-rec index {folder}" in caplog.text
    )
    (folder / ann.INDEX_INFO_FILE).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        assert ann.load_index(folder, load_model(folder)) is None
    assert f"expected both {ann.INDEX_FILE} and {ann.INDEX_INFO_FILE}" in caplog.text


def test_an_unreadable_or_mismatched_index_file_is_ignored_with_a_warning(
    model_dir, tmp_path, caplog
) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    ann.index_model_folder(folder, ann.IndexConfig(kind="ivf"), sample_users=10)
    index_file = folder / ann.INDEX_FILE
    ivf = index_file.read_bytes()
    index_file.write_bytes(b"not an index")
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        assert ann.load_index(folder, load_model(folder)) is None
    assert f"{ann.INDEX_FILE} is unreadable" in caplog.text
    index_file.write_bytes(ivf)
    info = json.loads((folder / ann.INDEX_INFO_FILE).read_text())
    (folder / ann.INDEX_INFO_FILE).write_text(json.dumps({**info, "kind": "hnsw"}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lite_rec.ann"):
        assert ann.load_index(folder, load_model(folder)) is None
    assert f"{ann.INDEX_FILE} (ivf, {N_ITEMS} items) is not the hnsw index" in caplog.text


def test_the_index_command_writes_the_index_and_refuses_bad_folders(
    model_dir, tmp_path, capsys, data
) -> None:
    folder = copy_of(model_dir, tmp_path / "model")
    assert (
        main(["index", str(folder), "--kind", "ivf", "--nprobe", "8", "--sample-users", "30"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "ivf" and printed["params"] == {"nlist": 179, "nprobe": 8}
    assert printed == json.loads((folder / ann.INDEX_INFO_FILE).read_text())

    assert main(["index", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"lite-rec index: error: {tmp_path}: expected a model folder")
    assert "lacks model.pt, model_config.json, catalog.json" in error
    assert main(["index", str(folder), "--data", str(tmp_path)]) == 2
    assert f"{tmp_path}: expected a data folder `lite-rec prepare` wrote" in capsys.readouterr().err
    assert main(["index", str(folder), "--hnsw-m", "0"]) == 2
    assert "index hnsw_m: expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["index", str(folder), "--kind", "ivf", "--nprobe", "-1"]) == 2
    assert "index nprobe: expected 0 (automatic) or more, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", str(folder), "--kind", "flat"])


def test_a_model_trained_on_another_catalog_is_refused(model_dir, tmp_path) -> None:
    with pytest.raises(InputError, match=r"catalog.json: expected the item catalog of the data"):
        ann.index_model_folder(model_dir, ann.IndexConfig(), cyclic_data(50, 20))


def test_automatic_ivf_parameters_follow_the_catalog_size() -> None:
    assert ann.IndexConfig(kind="ivf").params(2000) == {"nlist": 179, "nprobe": 23}  # 4 x 44.7
    assert ann.IndexConfig(kind="ivf").params(1_000_000) == {"nlist": 4000, "nprobe": 500}
    assert ann.IndexConfig(kind="ivf", nlist=50, nprobe=80).params(20) == {
        "nlist": 20,
        "nprobe": 20,
    }
    assert ann.IndexConfig().params(5) == {"m": 16, "ef_construction": 200, "ef_search": 256}
    assert ann.IndexConfig(kind="scann").params(1_000_000) == {
        "nlist": 8000,
        "nprobe": 240,
        "reorder": 64,
    }
    assert ann.IndexConfig(kind="scann").params(2000)["nprobe"] == 240  # of 358


def test_the_command_line_states_the_index_defaults() -> None:
    defaults = ann.IndexConfig()
    for option, text in INDEX_OPTIONS.items():
        stated = re.search(r"\((\d+)", text)
        if stated:
            assert int(stated.group(1)) == getattr(defaults, option), option
    assert INDEX_KINDS == list(ann.KINDS)  # the parser's copy, which spares it torch
    parsed = build_parser().parse_args(["index", "folder"])
    assert all(getattr(parsed, option) is None for option in INDEX_OPTIONS)


@pytest.mark.parametrize("kind", ["hnsw", "scann"])
def test_the_logged_pyfunc_carries_the_index(model_dir, tmp_path, kind) -> None:
    import mlflow

    from lite_rec.tracking import Tracking, log_pyfunc

    folder = copy_of(model_dir, tmp_path / "model")
    ann.index_model_folder(folder, ann.IndexConfig(kind=kind), sample_users=10)
    with Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}").run(name="index"):
        info = log_pyfunc(folder)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    assert pyfunc.unwrap_python_model().recommender.index.kind == kind
    requirements = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text()
    file = ann.index_file(kind)
    assert ann.INDEX_REQUIREMENTS[file] in requirements
    others = {need for name, need in ann.INDEX_REQUIREMENTS.items() if name != file}
    assert not others & set(requirements.split())


def test_the_item_index_asset_reports_kind_recall_and_build_time(model_dir, tmp_path, data) -> None:
    import mlflow

    from lite_rec.pipeline import RUN_FILE, TrainedModel
    from lite_rec.tracking import Tracking, log_pyfunc
    from orchestration.assets.model import ItemIndexSettings, item_index
    from orchestration.resources import MlflowTracking

    folder = copy_of(model_dir, tmp_path / "model")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracking(uri).run(name="train") as run:  # as training logs the folder, index-less
        plain = log_pyfunc(folder, name="lite_rec_test")
    record = {"run_id": run.info.run_id, "tracking_uri": uri, "model_uri": plain.model_uri}
    (folder / RUN_FILE).write_text(json.dumps(record))
    trained = TrainedModel(folder, run.info.run_id, "0", 1, {}, [], 0.0, plain.model_uri, None)
    output = item_index(
        config=ItemIndexSettings(sample_users=50),
        mlflow_tracking=MlflowTracking(uri=uri),
        sequences=data,
        rec_model=trained,
    )
    # The model registered after this asset is the training run's model with the index.
    indexed = output.value.pop("model_uri")
    assert indexed != plain.model_uri
    assert json.loads((folder / RUN_FILE).read_text())["model_uri"] == indexed
    logged = mlflow.get_logged_model(indexed.removeprefix("models:/"))
    assert (logged.source_run_id, logged.name) == (run.info.run_id, "lite_rec_test")
    assert mlflow.pyfunc.load_model(indexed).unwrap_python_model().recommender.index is not None
    assert mlflow.pyfunc.load_model(plain.model_uri).unwrap_python_model().recommender.index is None
    assert output.value == json.loads((folder / ann.INDEX_INFO_FILE).read_text())
    plain = {key: type(value) for key, value in output.value.items() if key != "params"}
    assert set(plain.values()) <= {int, float, str}, plain  # Dagster's event log takes no numpy
    assert output.metadata["kind"].value == "hnsw"
    assert 0.9 <= output.metadata["recall@10"].value <= 1.0
    assert output.metadata["n items"].value == N_ITEMS
    assert output.metadata["build seconds"].value > 0
