"""The sampled-softmax loss: logQ, accidental hits, in-batch and popularity negatives, the
touched-items-only projection against the whole table, sparse ID gradients, `train.recipe=auto`
choosing `large` by catalog size, and the step-cost benchmark."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lite_rec.bench.step_cost import Variant, step_cost_markdown, time_steps, variant_config
from lite_rec.config import DEFAULT_RECIPES, ModelConfig, TrainConfig, load_config
from lite_rec.evaluate import evaluate
from lite_rec.model import RecommendationLLM
from lite_rec.nn.sampled_softmax import (
    NegativeSampler,
    in_batch_candidates,
    item_counts,
    sampled_cross_entropy,
)
from lite_rec.recipe import LARGE_MIN_ITEMS, choose_recipe, resolve_config
from lite_rec.train import (
    negative_sampler,
    parameter_groups,
    set_sparse_id_gradients,
    train,
    training_loss,
)
from lite_rec.trainer import adamw_with_warmup, clip_gradients
from tests.conftest import cyclic_data
from tests.test_train import assert_resume_after_crash_is_identical

N_ITEMS, TEXT_DIM = 30, 6


def test_logq_correction_on_a_hand_computed_case():
    """d = 1, user 1: scores are the item vectors. Target item 1 (q 0.25), candidates 2 and 3
    (q 0.5 and 0.25): corrected logits 1 - log 0.25, 2 - log 0.5, 3 - log 0.25."""
    weights = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    users = torch.tensor([[1.0]])
    log_q = torch.tensor([0.5, 0.25]).log()
    loss = sampled_cross_entropy(
        users, weights, None, torch.tensor([1]), torch.tensor([2, 3]), log_q, log_q[1:]
    )
    a, b, c = 1 + math.log(4), 2 + math.log(2), 3 + math.log(4)
    expected = -(a - math.log(math.exp(a) + math.exp(b) + math.exp(c)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # A constant log q (uniform) shifts every logit alike: plain softmax over the three.
    uniform = torch.full((2,), -math.log(7.0))
    plain = sampled_cross_entropy(
        users, weights, None, torch.tensor([1]), torch.tensor([2, 3]), uniform, uniform[:1]
    )
    expected = -(1 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    assert plain.item() == pytest.approx(expected, rel=1e-6)


def test_accidental_hits_are_masked_and_label_smoothing_spreads_over_real_candidates():
    """Row 0's target 2 is also a candidate: that column counts neither in the softmax nor in
    the smoothed share, which spreads over the target and the real candidates."""
    torch.manual_seed(0)
    weights, bias = torch.randn(5, 3), torch.randn(5)
    users = torch.randn(2, 3)
    targets, candidates = torch.tensor([2, 4]), torch.tensor([1, 2, 3])
    log_q = torch.tensor([-1.0, -2.0, -0.5])
    target_log_q = torch.tensor([-2.0, -1.5])
    loss = sampled_cross_entropy(
        users, weights, bias, targets, candidates, log_q, target_log_q, label_smoothing=0.2
    )
    terms = []
    for row in range(2):
        kept = [k for k in range(3) if candidates[k] != targets[row]]
        scores = users[row] @ weights.T + bias  # (5,)
        logits = torch.cat(
            [
                (scores[targets[row]] - target_log_q[row]).view(1),
                scores[candidates[kept]] - log_q[kept],
            ]
        )
        terms.append(
            torch.nn.functional.cross_entropy(logits[None], torch.tensor([0]), label_smoothing=0.2)
        )
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_in_batch_candidates_are_the_distinct_targets_with_their_share():
    items, log_q, target_log_q = in_batch_candidates(torch.tensor([3, 1, 3, 3]))
    assert items.tolist() == [1, 3]
    torch.testing.assert_close(log_q, torch.tensor([0.25, 0.75]).log())
    torch.testing.assert_close(target_log_q, torch.tensor([0.75, 0.25, 0.75, 0.75]).log())


def test_popularity_sampler_probabilities_and_draws():
    counts = item_counts([np.array([0, 0, 0, 2]), np.array([2, 3, 0])], n_items=4)
    assert counts.tolist() == [4, 0, 2, 1]
    sampler = NegativeSampler(4, 200_000, counts, alpha=0.5)
    weights = np.array([5, 1, 3, 2], dtype=np.float64) ** 0.5  # (count + 1)^alpha
    expected = weights / weights.sum()
    torch.testing.assert_close(
        sampler.log_q(torch.arange(4)), torch.tensor(np.log(expected), dtype=torch.float32)
    )
    torch.manual_seed(0)
    items, log_q = sampler.draw()
    shares = np.bincount(items.numpy(), minlength=4) / len(items)
    np.testing.assert_allclose(shares, expected, atol=0.005)
    torch.testing.assert_close(log_q, sampler.log_q(items))
    torch.manual_seed(0)
    assert torch.equal(sampler.draw()[0], items)  # seeded: a resumed run draws the same
    uniform = NegativeSampler(8, 3)
    torch.testing.assert_close(uniform.log_q(torch.tensor([0, 7])), torch.full((2,), -math.log(8)))


def text_vectors(n_items: int = N_ITEMS, dim: int = TEXT_DIM) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_items, dim)).astype(np.float32)


def small_model(n_items: int = N_ITEMS, **overrides) -> RecommendationLLM:
    torch.manual_seed(0)
    values = dict(hidden_size=8, num_layers=1, num_heads=2, dropout=0.0, max_len=6)
    config = ModelConfig(**{**values, **overrides})
    text = text_vectors(n_items) if "text" in config.item_repr else None
    return RecommendationLLM(config, n_items, text)


def a_batch(padded: bool = True) -> dict[str, torch.Tensor]:
    """Three right-padded rows (internal indices), one without padding, or (`padded` false)
    two rows without any; item 5 is the target of several positions, so in-batch shares
    differ."""
    if not padded:
        input_ids = torch.tensor([[7, 5, 2, 5, 11], [3, 9, 5, 8, 1]])
        target_ids = torch.tensor([[5, 2, 5, 11, 6], [9, 5, 8, 1, 30]])
        return {"input_ids": input_ids, "target_ids": target_ids}
    input_ids = torch.tensor([[3, 9, 5, 0, 0], [7, 5, 2, 5, 11], [4, 0, 0, 0, 0]])
    target_ids = torch.tensor([[9, 5, 8, 0, 0], [5, 2, 5, 11, 6], [5, 0, 0, 0, 0]])
    return {"input_ids": input_ids, "target_ids": target_ids}


def whole_table_reference(
    model: RecommendationLLM, batch, sampler: NegativeSampler, label_smoothing: float, seed: int
) -> torch.Tensor:
    """The sampled loss from the whole item table: every item projected, every logit of the
    catalog computed, then the target's and the candidates' columns picked and corrected."""
    torch.manual_seed(seed)
    negatives, negative_log_q = sampler.draw()  # the draws the model's loss makes first
    table = model.items(batch)  # (n_items + 1, d)
    hidden = model.hidden_states(batch["input_ids"], table)
    has_target = batch["target_ids"] > 0
    users = model.head(hidden[has_target])  # (N, d)
    targets = batch["target_ids"][has_target] - 1  # (N,) item indices
    weights, bias = model.output_weights(table)
    logits = users @ weights.T + (0.0 if bias is None else bias)  # (N, n_items)
    candidates, log_q = negatives, negative_log_q
    if sampler.in_batch:
        distinct, counts = torch.unique(targets, return_counts=True)
        candidates = torch.cat([negatives, distinct])
        log_q = torch.cat([log_q, (counts / len(targets)).log()])
        target_log_q = (counts / len(targets)).log()[torch.searchsorted(distinct, targets)]
    else:
        target_log_q = sampler.log_q(targets)
    terms = []
    for row, target in enumerate(targets):
        kept = candidates != target
        row_logits = torch.cat(
            [
                (logits[row, target] - target_log_q[row]).view(1),
                logits[row, candidates[kept]] - log_q[kept],
            ]
        )
        terms.append(
            torch.nn.functional.cross_entropy(
                row_logits[None], torch.tensor([0]), label_smoothing=label_smoothing
            )
        )
    return torch.stack(terms).mean()


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.to_dense() if p.grad.is_sparse else p.grad.clone()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


SETTINGS = [
    ({}, {}),
    ({"item_repr": "id", "positions": "end"}, {"in_batch": True}),
    ({"item_repr": "text", "tie_output": False}, {"popularity": True}),
    ({"positions": "end"}, {"popularity": True, "in_batch": True, "smoothing": 0.3}),
    ({"whiten_text": True}, {"in_batch": True, "num_negatives": 0}),
]


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("model_overrides,sampling", SETTINGS)
def test_touched_items_only_equal_the_whole_table(model_overrides, sampling, padded):
    model = small_model(**model_overrides).train()
    counts = np.arange(N_ITEMS) if sampling.get("popularity") else None
    sampler = NegativeSampler(
        N_ITEMS, sampling.get("num_negatives", 7), counts, 0.75, sampling.get("in_batch", False)
    )
    smoothing = sampling.get("smoothing", 0.0)
    batch = a_batch(padded)
    torch.manual_seed(5)
    loss = model.loss(batch, label_smoothing=smoothing, sampler=sampler)
    loss.backward()
    touched = gradients(model)
    model.zero_grad(set_to_none=True)
    reference = whole_table_reference(model, batch, sampler, smoothing, seed=5)
    reference.backward()
    expected = gradients(model)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    assert touched.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(touched[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


class FakeTower(nn.Module):
    """An Item LLM stand-in: item vectors from a trainable linear map of fixed inputs."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.inputs = torch.randn(n_items, 4)
        self.layer = nn.Linear(4, dim)
        self.n_items, self.dim = n_items, dim

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.layer(self.inputs[items])

    def embed_all(self) -> torch.Tensor:
        return self(torch.arange(self.n_items))

    def step_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.unique(item_ids[item_ids > 0]) - 1


def test_a_fine_tuned_item_llm_gets_the_same_loss_and_gradients_from_touched_items():
    model = small_model().train()
    model.items.attach_tower(FakeTower(N_ITEMS, TEXT_DIM))
    model.items.refresh()
    sampler = NegativeSampler(N_ITEMS, 5, in_batch=True)
    torch.manual_seed(2)
    loss = model.loss(a_batch(), sampler=sampler)
    loss.backward()
    touched = gradients(model)
    model.zero_grad(set_to_none=True)
    whole_table_reference(model, a_batch(), sampler, 0.0, seed=2).backward()
    expected = gradients(model)
    assert any(name.startswith("items.tower.") for name in touched)
    for name in expected:
        torch.testing.assert_close(touched[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_full_loss_is_what_train_loss_ce_gives():
    model = small_model().train()
    config = TrainConfig(loss="ce")
    assert negative_sampler(config, N_ITEMS) is None
    torch.manual_seed(0)
    expected = model.loss(a_batch())
    torch.manual_seed(0)
    assert torch.equal(training_loss(model, a_batch(), config), expected)


class LargestOutput(TorchDispatchMode):
    """The most rows (first dimension) of any dense tensor an operator produced while active."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else [out]:
            # A sparse gradient has the table's shape and the touched rows' values alone.
            if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided and tensor.dim():
                self.rows = max(self.rows, tensor.shape[0])
        return out


@pytest.mark.parametrize("sparse", [True, False])
def test_a_million_item_step_never_builds_a_catalog_sized_tensor(sparse):
    """The sampled loss's forward and backward produce no tensor with a row per item; with
    dense ID gradients, the backward's gradient of the ID table is the one that has."""
    n_items = 1_000_000
    model = small_model(n_items=n_items, max_len=50).train()
    projected = []
    model.items.text_projection.register_forward_hook(
        lambda module, inputs, output: projected.append(inputs[0].shape[0])
    )
    config = TrainConfig(loss="sampled", num_negatives=256, sparse_id_gradients=sparse)
    set_sparse_id_gradients(model, config)
    optimizer, scheduler = adamw_with_warmup(parameter_groups(model, config), config)
    windows = torch.randint(1, n_items + 1, (16, 51))
    batch = {"input_ids": windows[:, :-1], "target_ids": windows[:, 1:]}
    with LargestOutput() as largest:
        loss = training_loss(model, batch, config, negative_sampler(config, n_items))
        loss.backward()
    assert projected and max(projected) <= 1 + 16 * 50 * 2 + 256
    if sparse:
        assert largest.rows < 2 * 16 * 51 + 256  # (N, candidates) logits at most
        assert model.items.id_embedding.weight.grad.is_sparse
        before = model.items.id_embedding.weight.detach().clone()
        clip_gradients(list(model.parameters()), 1.0)
        optimizer.step()
        scheduler.step()
        changed = (model.items.id_embedding.weight != before).any(1)
        assert 0 < int(changed.sum()) <= 16 * 51 + 256  # the touched rows alone
    else:
        assert largest.rows == n_items + 1  # the ID table's dense gradient


def test_clipping_counts_sparse_gradients_as_their_dense_equivalent():
    torch.manual_seed(0)
    dense_params = [nn.Parameter(torch.randn(6, 2)), nn.Parameter(torch.randn(3))]
    sparse_params = [nn.Parameter(p.detach().clone()) for p in dense_params]
    indices = torch.tensor([[1, 4, 1]])  # row 1 twice: coalesced before the norm
    values = torch.randn(3, 2)
    sparse_params[0].grad = torch.sparse_coo_tensor(indices, values, (6, 2), check_invariants=True)
    dense_params[0].grad = sparse_params[0].grad.to_dense()
    dense_params[1].grad = torch.randn(3)
    sparse_params[1].grad = dense_params[1].grad.clone()
    torch.nn.utils.clip_grad_norm_(dense_params, 0.5)
    clip_gradients(sparse_params, 0.5)
    for dense, sparse in zip(dense_params, sparse_params, strict=True):
        torch.testing.assert_close(sparse.grad.to_dense(), dense.grad)


def test_auto_picks_large_from_the_threshold_and_the_full_loss_below():
    below = cyclic_data(n_items=LARGE_MIN_ITEMS - 1, n_users=30)
    above = cyclic_data(n_items=LARGE_MIN_ITEMS, n_users=30)
    assert choose_recipe(below)[0] == "none"
    recipe, reason = choose_recipe(above)
    assert recipe == "large" and f"{LARGE_MIN_ITEMS:,} items" in reason
    resolved = resolve_config(load_config(overrides=["train.recipe=auto"]), above)
    assert resolved.train.recipe == "large"
    for key, value in DEFAULT_RECIPES["large"]["train"].items():
        assert getattr(resolved.train, key) == value, key
    assert resolved.train.loss == "sampled"
    small = resolve_config(load_config(overrides=["train.recipe=auto"]), below)
    assert small.train.loss == "ce"
    # The Amazon sets (about 12,000 items) and MovieLens keep the full loss.
    assert LARGE_MIN_ITEMS > 12_101


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"negatives": "zipf"}, r"train.negatives: expected one of \('uniform', 'popularity'\)"),
        ({"num_negatives": 0}, r"train.num_negatives must be > 0, or >= 0 with train.in_batch"),
        ({"loss": "ce", "sparse_id_gradients": True}, r"sparse_id_gradients needs train.loss"),
        ({"weight_decay": 0.1, "sparse_id_gradients": True}, r"SparseAdam has no weight decay"),
    ],
)
def test_bad_sampled_settings_are_refused_by_name(changes, message):
    config = TrainConfig(**{"loss": "sampled", **changes})
    model = small_model()
    with pytest.raises(ValueError, match=message):
        set_sparse_id_gradients(model, config)
        negative_sampler(config, N_ITEMS, [np.arange(N_ITEMS)])
        adamw_with_warmup(parameter_groups(model, config), config)


LARGE_SETTINGS = dict(
    loss="sampled",
    num_negatives=8,
    negatives="popularity",
    in_batch_negatives=True,
    sparse_id_gradients=True,
)


def small_train(tmp_path, epochs: int, **train_overrides):
    data = cyclic_data(n_items=20, n_users=60, min_length=6, spread=5)
    model = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, dropout=0.1, max_len=6)
    values = dict(epochs=epochs, batch_size=16, lr=1e-2, warmup_steps=2, patience=100, seed=3)
    config = TrainConfig(**{**values, **LARGE_SETTINGS, **train_overrides})
    return data, lambda out_dir, **kwargs: train(
        data, text_vectors(20, 5), model, config, out_dir, progress=False, **kwargs
    )


def test_the_large_settings_learn_and_resume_bit_identically(tmp_path):
    data, run = small_train(tmp_path, epochs=12)
    result = run(tmp_path / "learn")
    assert evaluate(result.model, data, "test")["recall@5"] > 0.9
    _, short = small_train(tmp_path, epochs=3)
    assert_resume_after_crash_is_identical(short, tmp_path)


def test_step_cost_times_both_losses_and_projects_touched_rows_only():
    common = ["model.num_layers=1", "model.max_len=8", "train.batch_size=4"]
    full = variant_config(Variant("full", ["train.recipe=none"]), common)
    sampled = variant_config(Variant("sampled", ["train.recipe=large"]), common)
    assert (full.train.loss, sampled.train.loss) == ("ce", "sampled")
    rows = [
        {"variant": name, **time_steps(config, 5_000, steps=3, seconds=1.0)}
        for name, config in [("full", full), ("sampled", sampled)]
    ]
    assert rows[0]["projected_rows"] == 5_001  # the whole table
    assert rows[1]["projected_rows"] <= 1 + 4 * 8 * 2 + sampled.train.num_negatives
    assert all(row["timed_steps"] >= 3 and row["median_step_ms"] > 0 for row in rows)
    results = {
        "command": "lite-rec bench step-cost",
        "machine": {"cpus": 2, "torch_threads": 1, "platform": "test", "torch": "2"},
        "batch_size": 4,
        "max_len": 8,
        "rounds": 1,
        "variants": [dataclasses.asdict(Variant("full", ["train.recipe=none"]))],
        "rows": rows,
    }
    table = step_cost_markdown(results)
    assert "| 5,000 |" in table and "full: step ms" in table
    with pytest.raises(ValueError, match="name train.recipe"):
        variant_config(Variant("auto", []), common)
