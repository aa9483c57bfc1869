"""The rules of the asset checks on tiny hand-made tables: each names what breaks it."""

import numpy as np
import pandas as pd
import pytest

from lite_rec.checks import embedding_rules, kcore_rules, metric_floor_rule, split_rules


def frame(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


def failing(results) -> dict[str, tuple[int, list[str]]]:
    return {r.rule: (r.failing, r.examples) for r in results if not r.passed}


def test_kcore_rules_name_the_sparse_users_and_items() -> None:
    interactions = frame([("u1", "a", 1, ""), ("u1", "b", 2, ""), ("u2", "a", 3, "")])
    assert failing(kcore_rules(interactions, 2)) == {
        "every user has >= 2 interactions": (1, ["u2"]),
        "every item has >= 2 interactions": (1, ["b"]),
    }
    assert all(r.passed for r in kcore_rules(interactions, 1))


def test_split_rules_pass_a_leave_one_out_split() -> None:
    splits = frame(
        [("u1", "a", 1, "train"), ("u1", "b", 2, "valid"), ("u1", "c", 3, "test")]
        + [("u2", "c", 1, "train"), ("u2", "a", 5, "valid"), ("u2", "b", 6, "test")]
    )
    results = split_rules(splits)
    assert all(r.passed for r in results) and {r.checked for r in results} == {2}


def test_split_rules_name_each_broken_user() -> None:
    splits = frame(
        # u1: two test rows, no validation row
        [("u1", "a", 1, "train"), ("u1", "b", 2, "test"), ("u1", "c", 3, "test")]
        # u2: a training row after its validation row; its test item is in its training part
        + [("u2", "a", 1, "train"), ("u2", "b", 2, "valid"), ("u2", "a", 3, "train")]
        + [("u2", "a", 4, "test")]
    )
    assert failing(split_rules(splits)) == {
        "every user has one valid item": (1, ["u1"]),
        "every user has one test item": (1, ["u1"]),
        "valid and test come after every training row of the user": (1, ["u2"]),
        "no test item in the user's training part": (1, ["u2"]),
    }


def test_embedding_rules_name_items_without_a_finite_vector() -> None:
    vectors = np.ones((3, 4), dtype=np.float32)
    assert all(r.passed for r in embedding_rules(vectors, ["a", "b", "c"]))
    vectors[1, 2] = np.nan
    vectors[2, 0] = np.inf
    assert failing(embedding_rules(vectors, ["a", "b", "c"])) == {
        "no NaN or infinite value": (2, ["b", "c"])
    }
    assert failing(embedding_rules(vectors[:2], ["a", "b", "c"]))["one row per catalog item"] == (
        1,
        ["2 rows for 3 items"],
    )


def test_metric_floor_rule() -> None:
    metrics = {"ndcg@10": 0.0123456, "recall@10": 0.2}
    assert metric_floor_rule(metrics, "ndcg@10", 0.01).passed
    below = metric_floor_rule(metrics, "ndcg@10", 0.05)
    assert (below.failing, below.examples) == (1, ["ndcg@10 = 0.0123"])
    with pytest.raises(ValueError, match="'mrr': expected one of"):
        metric_floor_rule(metrics, "mrr", 0.1)
