import math

import numpy as np
import pytest
import torch

from lite_rec.metrics import exclude_history_, ranking_metrics, target_ranks


def ranks_of(scores, targets, histories=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    targets = torch.tensor(targets)
    if histories is not None:
        exclude_history_(scores, [np.array(h) for h in histories], keep=targets)
    return target_ranks(scores, targets).numpy()


def test_target_at_rank_three():
    # item 4 is the target; items 0 and 2 score higher.
    ranks = ranks_of([[0.9, 0.1, 0.8, 0.2, 0.5, 0.3]], [4])
    assert ranks.tolist() == [3]
    metrics = ranking_metrics(ranks)
    assert metrics["recall@5"] == 1.0 and metrics["recall@10"] == 1.0
    assert metrics["ndcg@5"] == pytest.approx(1 / math.log2(4))
    assert metrics["mrr"] == pytest.approx(1 / 3)


def test_rank_beyond_cutoff_scores_zero():
    scores = [[float(10 - i) for i in range(10)]]  # item i has rank i + 1
    metrics = ranking_metrics(ranks_of(scores, [6]))  # rank 7
    assert metrics["recall@5"] == 0.0 and metrics["ndcg@5"] == 0.0
    assert metrics["recall@10"] == 1.0
    assert metrics["ndcg@10"] == pytest.approx(1 / math.log2(8))
    assert metrics["mrr"] == pytest.approx(1 / 7)


def test_history_exclusion_improves_rank_but_never_drops_the_target():
    scores = [[0.9, 0.1, 0.8, 0.2, 0.5, 0.3]]
    assert ranks_of(scores, [4], histories=[[0, 1]]).tolist() == [2]
    assert ranks_of(scores, [4], histories=[[0, 2]]).tolist() == [1]
    # The target itself in the history stays rankable.
    assert ranks_of(scores, [4], histories=[[0, 4]]).tolist() == [2]


def test_exclusion_is_per_user():
    scores = [[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]]
    assert ranks_of(scores, [1, 1], histories=[[0], []]).tolist() == [1, 2]


def test_ties_do_not_favour_the_target():
    # Target 1 ties with item 3: pessimistic rank counts the tied item as ahead.
    assert ranks_of([[0.9, 0.5, 0.1, 0.5]], [1]).tolist() == [3]
    # A constant model ranks every target last.
    assert ranks_of([[0.0] * 7], [2]).tolist() == [7]
    # A NaN target score ranks last.
    assert ranks_of([[0.3, float("nan"), 0.1]], [1]).tolist() == [3]


def test_ranks_of_a_batch_larger_than_a_comparison_chunk_match_a_brute_force_count():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (150, 40), generator=generator).float()  # many ties
    scores[7, 3] = float("nan")
    targets = torch.randint(0, 40, (150,), generator=generator)
    targets[7] = 3
    expected = [
        40 if math.isnan(row[t]) else sum(1 for value in row if value >= row[t])
        for row, t in zip(scores.tolist(), targets.tolist(), strict=True)
    ]
    assert target_ranks(scores, targets).tolist() == expected


def test_metrics_average_over_users_and_ignore_order():
    ranks = np.array([1, 3, 30, 2, 11])
    metrics = ranking_metrics(ranks)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert ranking_metrics(ranks[::-1]) == metrics
    with pytest.raises(ValueError):
        ranking_metrics(np.array([], dtype=np.int64))
