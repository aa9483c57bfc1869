import math

import numpy as np
import pytest
import torch

from lite_rec.metrics import ranking_metrics
from lite_rec.ranking import rank_catalog

CHUNKS = [None, 1, 2, 4]  # the whole catalog, and chunks that split ties apart


class FixedScores:
    """A model whose scores for a history are given: `rows[tuple(history)]` (n_items,), so
    every history of a test must be distinct."""

    def __init__(self, rows: dict[tuple, list[float]]):
        self.rows = {key: torch.tensor(row, dtype=torch.float32) for key, row in rows.items()}
        self.n_items = len(next(iter(rows.values())))

    def user_vectors(self, histories) -> torch.Tensor:
        return torch.stack([self.rows[tuple(np.asarray(h).tolist())] for h in histories])

    def item_scores(self, users: torch.Tensor, start: int = 0, stop: int | None = None):
        return users[:, start:stop].clone()


def ranks_of(scores, targets, histories=None, item_chunk=None):
    """Ranks of `targets` under the score rows, each user's history excluded (none: None)."""
    exclude = histories is not None
    keys = histories if exclude else [[-1 - user] for user in range(len(scores))]
    model = FixedScores({tuple(key): row for key, row in zip(keys, scores, strict=True)})
    ranking = rank_catalog(
        model,
        [np.array(key, dtype=np.int64) for key in keys],
        np.array(targets),
        exclude_history=exclude,
        item_chunk=item_chunk,
    )
    return ranking.ranks


@pytest.mark.parametrize("item_chunk", CHUNKS)
def test_target_at_rank_three(item_chunk):
    # item 4 is the target; items 0 and 2 score higher.
    ranks = ranks_of([[0.9, 0.1, 0.8, 0.2, 0.5, 0.3]], [4], item_chunk=item_chunk)
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


@pytest.mark.parametrize("item_chunk", CHUNKS)
def test_history_exclusion_improves_rank_but_never_drops_the_target(item_chunk):
    scores = [[0.9, 0.1, 0.8, 0.2, 0.5, 0.3]]
    assert ranks_of(scores, [4], [[0, 1]], item_chunk).tolist() == [2]
    assert ranks_of(scores, [4], [[0, 2]], item_chunk).tolist() == [1]
    # The target itself in the history stays rankable.
    assert ranks_of(scores, [4], [[0, 4]], item_chunk).tolist() == [2]


@pytest.mark.parametrize("item_chunk", CHUNKS)
def test_exclusion_is_per_user(item_chunk):
    scores = [[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]]
    assert ranks_of(scores, [1, 1], [[0], []], item_chunk).tolist() == [1, 2]


@pytest.mark.parametrize("item_chunk", CHUNKS)
def test_ties_do_not_favour_the_target(item_chunk):
    # Target 1 ties with item 3: pessimistic rank counts the tied item as ahead.
    assert ranks_of([[0.9, 0.5, 0.1, 0.5]], [1], item_chunk=item_chunk).tolist() == [3]
    # A constant model ranks every target last.
    assert ranks_of([[0.0] * 7], [2], item_chunk=item_chunk).tolist() == [7]
    # A NaN target score ranks last.
    assert ranks_of([[0.3, float("nan"), 0.1]], [1], item_chunk=item_chunk).tolist() == [3]


@pytest.mark.parametrize("item_chunk", [None, 7, 40])
def test_ranks_of_a_batch_of_many_tied_rows_match_a_brute_force_count(item_chunk):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (150, 40), generator=generator).float()  # many ties
    scores[7, 3] = float("nan")
    targets = torch.randint(0, 40, (150,), generator=generator)
    targets[7] = 3
    expected = [
        40 if math.isnan(row[t]) else sum(1 for value in row if value >= row[t])
        for row, t in zip(scores.tolist(), targets.tolist(), strict=True)
    ]
    ranks = ranks_of(scores.tolist(), targets.tolist(), item_chunk=item_chunk)
    assert ranks.tolist() == expected


@pytest.mark.parametrize("item_chunk", [1, 3, 7])
def test_metrics_do_not_depend_on_chunk_size_batch_size_or_user_order(item_chunk):
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (90, 10), generator=generator).float().tolist()
    targets = torch.randint(0, 10, (90,), generator=generator).tolist()
    histories = [[user % 10, 10 + user // 10] for user in range(90)]  # distinct keys
    scores = [row + [0.0] * 10 for row in scores]  # items 10..19 exist to be in histories
    model = FixedScores({tuple(h): row for h, row in zip(histories, scores, strict=True)})
    arrays = [np.array(h) for h in histories]
    reference = ranking_metrics(rank_catalog(model, arrays, np.array(targets)).ranks)
    order = np.random.default_rng(0).permutation(90)
    shuffled = rank_catalog(
        model,
        [arrays[u] for u in order],
        np.array(targets)[order],
        batch_size=8,
        item_chunk=item_chunk,
    )
    assert ranking_metrics(shuffled.ranks) == reference


def test_metrics_average_over_users_and_ignore_order():
    ranks = np.array([1, 3, 30, 2, 11])
    metrics = ranking_metrics(ranks)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert ranking_metrics(ranks[::-1]) == metrics
    with pytest.raises(ValueError):
        ranking_metrics(np.array([], dtype=np.int64))
