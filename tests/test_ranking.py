"""The one full-ranking loop: chunked scoring gives the unchunked ranks and top-k exactly,
ties included, for models with the chunked interface (with and without a score buffer and
target scores) and for models with only `score`."""

import math

import numpy as np
import pytest
import torch

from lite_rec.bench.ranking_speed import time_ranking
from lite_rec.config import ModelConfig
from lite_rec.model import RecommendationLLM
from lite_rec.ranking import (
    AUTO_ITEM_CHUNK,
    MAX_ITEM_CHUNK,
    WHOLE_CATALOG_SCORES,
    item_chunk_size,
    rank_catalog,
)
from tests.test_metrics import FixedScores


class DotModel:
    """User = the sum of its history's item vectors, score = the dot product with each item's
    vector. Small integer vectors: scores are exact and tie often. Records the width of every
    `item_scores` call."""

    def __init__(self, n_items: int, dim: int = 3, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.vectors = torch.randint(-1, 2, (n_items, dim), generator=generator).float()
        self.n_items = n_items
        self.widths: list[int] = []

    def user_vectors(self, histories) -> torch.Tensor:
        return torch.stack(
            [self.vectors[torch.as_tensor(h, dtype=torch.long)].sum(0) for h in histories]
        )

    def item_scores(self, users: torch.Tensor, start: int = 0, stop: int | None = None):
        stop = self.n_items if stop is None else stop
        self.widths.append(stop - start)
        return users @ self.vectors[start:stop].T  # (B, stop - start)


class Buffered:
    """`model` with an `item_scores` that takes `out` and `items`, like RecommendationLLM;
    `shift` is added to the scores of `items` for every other user, as a product that rounds
    differently from the chunks would."""

    def __init__(self, model, shift: float = 0.0):
        self.model, self.n_items, self.shift = model, model.n_items, shift
        self.widths: list[int] = []

    def user_vectors(self, histories) -> torch.Tensor:
        return self.model.user_vectors(histories)

    def item_scores(self, users, start=0, stop=None, out=None, items=None) -> torch.Tensor:
        if items is not None:
            scores = self.model.item_scores(users)[:, items].clone()  # (B, N)
            scores[::2] += self.shift
            return scores
        stop = self.n_items if stop is None else stop
        self.widths.append(stop - start)
        scores = self.model.item_scores(users, start, stop)  # (B, stop - start)
        return scores if out is None else out.copy_(scores)


class ScoreOnly:
    """The same model seen through `score(histories)` alone, like BERT4Rec."""

    def __init__(self, model: DotModel):
        self.model, self.n_items = model, model.n_items

    def score(self, histories) -> torch.Tensor:
        return self.model.item_scores(self.model.user_vectors(histories))


def users_of(n_items: int, n_users: int, seed: int = 0):
    """Random histories of 0 to 6 items, and targets, a third of them in their own history."""
    rng = np.random.default_rng(seed)
    histories = [rng.integers(0, n_items, rng.integers(0, 7)) for _ in range(n_users)]
    targets = rng.integers(0, n_items, n_users)
    for user in range(0, n_users, 3):
        if len(histories[user]):
            targets[user] = histories[user][-1]
    return histories, targets


def brute_force(model: DotModel, histories, targets, k: int):
    """Ranks and top-k from the whole score matrix, one user at a time, in plain Python."""
    ranks, tops = [], []
    for history, target in zip(histories, targets, strict=True):
        row = (model.vectors @ model.user_vectors([history])[0]).tolist()
        row = [float("-inf") if i in set(history) - {target} else s for i, s in enumerate(row)]
        others = sum(1 for i, s in enumerate(row) if i != target and s >= row[target])
        ranks.append(model.n_items if math.isnan(row[target]) else 1 + others)
        tops.append(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k])
    return np.array(ranks), np.array(tops)


@pytest.mark.parametrize("item_chunk", [1, 2, 3, 5, 8, 23, 100])
@pytest.mark.parametrize("batch_size", [1, 7, 1024])
@pytest.mark.parametrize("wrap", [None, 0.0, 0.5])  # plain; buffer + target scores; off
def test_chunked_ranks_and_top_k_equal_the_whole_catalog_and_a_brute_force(
    item_chunk, batch_size, wrap
):
    model = DotModel(23) if wrap is None else Buffered(DotModel(23), shift=wrap)
    histories, targets = users_of(23, 80)
    expected_ranks, expected_top = brute_force(DotModel(23), histories, targets, k=6)
    whole = rank_catalog(model, histories, targets, k=6, batch_size=batch_size)
    model.widths.clear()
    chunked = rank_catalog(
        model, histories, targets, k=6, batch_size=batch_size, item_chunk=item_chunk
    )
    assert (whole.ranks == expected_ranks).all() and (whole.top_items == expected_top).all()
    assert (chunked.ranks == whole.ranks).all()
    assert (chunked.top_items == whole.top_items).all()
    assert (chunked.top_scores == whole.top_scores).all()
    assert max(model.widths) <= item_chunk  # memory stays at batch x chunk scores


@pytest.mark.parametrize("buffered", [False, True])
def test_ranks_with_ties_across_chunk_boundaries_are_counted_by_hand(buffered):
    # Item 0 (the target, 0.5) ties with items 2, 4 and 6, which lie in other chunks of 2 and 3.
    row = [0.5, 0.9, 0.5, 0.1, 0.5, 0.7, 0.5]
    model = FixedScores({(): row, (5,): row, (5, 0): row})
    model = Buffered(model) if buffered else model
    histories = [np.array([], dtype=np.int64), np.array([5]), np.array([5, 0])]
    for item_chunk in (None, 1, 2, 3, 4):
        ranking = rank_catalog(model, histories, np.array([0, 0, 0]), k=4, item_chunk=item_chunk)
        # 1 + items 1, 2, 4, 5, 6; item 5 excluded; the target in the history stays rankable.
        assert ranking.ranks.tolist() == [6, 5, 5]
        # Equal scores: lower index first; the history (but the target) drops out.
        assert ranking.top_items.tolist() == [[1, 5, 0, 2], [1, 0, 2, 4], [1, 0, 2, 4]]
        assert ranking.top_scores[0].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.5])


def test_top_k_has_the_values_of_torch_topk_and_orders_equal_scores_by_item():
    model = DotModel(40, dim=2, seed=3)  # 9 possible scores for 40 items: ties everywhere
    histories, targets = users_of(40, 30, seed=3)
    ranking = rank_catalog(model, histories, k=12, exclude_history=False, item_chunk=9)
    full = model.item_scores(model.user_vectors(histories))  # (U, 40)
    assert (ranking.top_scores == full.topk(12, dim=1).values.numpy()).all()
    for items, values in zip(ranking.top_items, ranking.top_scores, strict=True):
        order = sorted(zip(-values, items, strict=True))
        assert [item for _, item in order] == items.tolist()
    assert (np.take_along_axis(full.numpy(), ranking.top_items, 1) == ranking.top_scores).all()


@pytest.mark.parametrize("buffered", [False, True])
def test_nan_scores_rank_the_target_last_and_come_first_in_the_top_k(buffered):
    nan = float("nan")
    model = FixedScores({(): [1.0, nan, 3.0, nan, 2.0]})
    model = Buffered(model) if buffered else model
    for item_chunk in (None, 1, 2):
        ranking = rank_catalog(model, [np.array([])] * 1, np.array([1]), k=3, item_chunk=item_chunk)
        assert ranking.ranks.tolist() == [5]
        assert ranking.top_items.tolist() == [[1, 3, 2]]


@pytest.mark.parametrize("item_chunk", [None, 4])
def test_a_model_with_only_score_ranks_like_its_chunked_interface(item_chunk):
    model = DotModel(17, seed=1)
    histories, targets = users_of(17, 40, seed=1)
    chunked = rank_catalog(model, histories, targets, k=5, batch_size=6, item_chunk=item_chunk)
    whole = rank_catalog(ScoreOnly(model), histories, targets, k=5, item_chunk=item_chunk)
    assert (whole.ranks == chunked.ranks).all()
    assert (whole.top_items == chunked.top_items).all()


def test_results_follow_the_users_whatever_their_order():
    model = DotModel(19, seed=2)
    histories, targets = users_of(19, 50, seed=2)
    reference = rank_catalog(model, histories, targets, k=4, item_chunk=5)
    order = np.random.default_rng(1).permutation(50)
    shuffled = rank_catalog(
        model, [histories[u] for u in order], targets[order], k=4, batch_size=9, item_chunk=5
    )
    assert (shuffled.ranks == reference.ranks[order]).all()
    assert (shuffled.top_items == reference.top_items[order]).all()


def test_k_beyond_the_unseen_items_ends_with_the_history_at_minus_infinity():
    model = FixedScores({(0, 1): [4.0, 3.0, 2.0, 1.0]})
    ranking = rank_catalog(model, [np.array([0, 1])], k=10, item_chunk=3)
    assert ranking.ranks is None
    assert ranking.top_items.tolist() == [[2, 3, 0, 1]]  # k is cut to the catalog
    assert ranking.top_scores.tolist() == [[2.0, 1.0, float("-inf"), float("-inf")]]


def test_targets_outside_the_catalog_are_refused():
    model = DotModel(5)
    with pytest.raises(ValueError, match="targets: expected one item index in 0..4"):
        rank_catalog(model, [np.array([1])], np.array([5]))
    with pytest.raises(ValueError, match="item_chunk"):
        rank_catalog(model, [np.array([1])], np.array([2]), item_chunk=0)


def test_the_item_chunk_is_the_whole_catalog_while_it_fits_and_the_measured_chunk_beyond():
    assert item_chunk_size(100, 1024, None) == 100
    assert item_chunk_size(WHOLE_CATALOG_SCORES // 8, 8, None) == WHOLE_CATALOG_SCORES // 8
    assert item_chunk_size(WHOLE_CATALOG_SCORES // 8 + 1, 8, None) == AUTO_ITEM_CHUNK
    assert item_chunk_size(10**6, 1024, None) == AUTO_ITEM_CHUNK
    assert item_chunk_size(10, 1, 3) == 3
    assert item_chunk_size(1 << 30, 1, 1 << 30) == MAX_ITEM_CHUNK  # float32 counts stay exact


@pytest.mark.parametrize("buffered", [False, True])
def test_the_automatic_item_chunk_ranks_like_an_explicit_one_and_the_whole_catalog(buffered):
    n_items = 2 * AUTO_ITEM_CHUNK + 5
    batch_size = WHOLE_CATALOG_SCORES // AUTO_ITEM_CHUNK  # the whole catalog does not fit
    model = DotModel(n_items, dim=2, seed=4)  # 9 possible scores: ties everywhere
    model = Buffered(model) if buffered else model
    histories, targets = users_of(n_items, 60, seed=4)
    automatic = rank_catalog(model, histories, targets, k=7, batch_size=batch_size)
    assert max(model.widths) == AUTO_ITEM_CHUNK
    explicit = rank_catalog(
        model, histories, targets, k=7, batch_size=batch_size, item_chunk=AUTO_ITEM_CHUNK
    )
    model.widths.clear()
    whole = rank_catalog(model, histories, targets, k=7, item_chunk=n_items)
    assert model.widths == [n_items] * len(model.widths)
    for ranking in (automatic, explicit):
        assert (ranking.ranks == whole.ranks).all()
        assert (ranking.top_items == whole.top_items).all()
        assert (ranking.top_scores == whole.top_scores).all()


def test_item_scores_into_a_buffer_equal_fresh_ones_and_those_of_given_items():
    model = RecommendationLLM(ModelConfig(item_repr="id", dropout=0.0), 50)
    users = model.user_vectors([np.array([1, 2, 3]), np.array([4]), np.array([])])  # (3, d)
    buffer = torch.full((3 * 15,), float("nan"))
    into = model.item_scores(users, 5, 20, out=buffer.view(3, 15))
    assert into.data_ptr() == buffer.data_ptr()
    assert torch.equal(into, model.item_scores(users, 5, 20))
    items = torch.tensor([7, 0, 49, 7])
    expected = model.item_scores(users)[:, items]  # (3, 4)
    assert torch.allclose(model.item_scores(users, items=items), expected, rtol=1e-6, atol=1e-6)


def test_a_model_ranks_the_same_chunked_through_its_buffer_and_whole():
    # Products of other widths may round differently: no two random scores lie that close.
    model = RecommendationLLM(ModelConfig(item_repr="id", dropout=0.0), 300)
    histories, targets = users_of(300, 40, seed=5)
    whole = rank_catalog(model, histories, targets, k=5)
    chunked = rank_catalog(model, histories, targets, k=5, item_chunk=64)
    assert (chunked.ranks == whole.ranks).all()
    assert (chunked.top_items == whole.top_items).all()
    assert np.allclose(chunked.top_scores, whole.top_scores, rtol=1e-6, atol=1e-6)


def test_the_ranking_benchmark_row_holds_its_fraction_of_the_product():
    row = time_ranking(ModelConfig(), n_items=300, n_users=20, item_chunk=64, repeats=1)
    assert (row["n_items"], row["d"], row["users"], row["item_chunk"]) == (300, 64, 20, 64)
    for name in ("evaluate", "recommend"):
        flops = row[f"{name}_users_per_s"] * 2 * 64 * 300
        assert row[f"{name}_fraction"] == pytest.approx(flops / (row["product_gflops"] * 1e9))
    assert row["peak_rss_mb"] > 0
    assert [len(times) for times in row["seconds"].values()] == [1, 1, 1, 1]
