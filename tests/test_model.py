import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lite_rec.config import ModelConfig
from lite_rec.model import RecommendationLLM, pad_histories
from lite_rec.nn.fused_cross_entropy import linear_cross_entropy

N_ITEMS, TEXT_DIM = 13, 6


def tiny_text() -> np.ndarray:
    """The Item LLM vectors of `tiny_model`. -> (N_ITEMS, TEXT_DIM)"""
    return np.random.default_rng(0).normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)


def zca_reference(raw: np.ndarray) -> np.ndarray:
    """ZCA by hand in float64: centred rows times C^(-1/2), rescaled to the centred mean norm."""
    centred = raw.astype(np.float64) - raw.mean(0)
    variances, directions = np.linalg.eigh(np.cov(centred.T))
    whitened = centred @ directions @ np.diag(variances**-0.5) @ directions.T
    norm = np.linalg.norm(centred, axis=1).mean() / np.linalg.norm(whitened, axis=1).mean()
    return whitened * norm


def tiny_model(**overrides) -> RecommendationLLM:
    torch.manual_seed(0)
    values = dict(hidden_size=8, num_layers=2, num_heads=2, dropout=0.3, max_len=5)
    config = ModelConfig(**{**values, **overrides})
    model = RecommendationLLM(config, N_ITEMS, tiny_text() if "text" in config.item_repr else None)
    with torch.no_grad():  # positions as large as items: a wrong position id shows in scores
        model.backbone.wpe.weight.normal_()
    return model.eval()


HISTORIES = [
    np.array([3, 1, 4]),
    np.array([5]),
    np.array([9, 2, 6, 5, 3, 5, 8, 9]),
    np.array([7, 0]),
]


def reference_scores(model: RecommendationLLM, history: np.ndarray) -> torch.Tensor:
    """Brute force, one unpadded history at a time: item vectors by hand, backbone, head,
    then a dot product with every item's output vector."""
    config = model.config
    kept = history[-config.max_len :]
    raw = tiny_text()
    texts = zca_reference(raw) if config.whiten_text else raw  # (n_items, d_text)
    rows = []
    for item in range(N_ITEMS):
        vector = torch.zeros(config.hidden_size)
        if "text" in config.item_repr:
            text = torch.as_tensor(texts[item], dtype=torch.float32)
            vector = (
                vector
                + model.items.text_projection.weight @ text
                + model.items.text_projection.bias
            )
        if config.item_repr != "text":
            vector = vector + model.items.id_embedding.weight[item + 1]
        rows.append(vector)
    item_vectors = torch.stack(rows)  # (n_items, d)
    # Positions 0.. from the first item, or ending at max_len - 1 with the last ("end").
    offset = config.max_len - len(kept) if config.positions == "end" else 0
    positions = torch.arange(len(kept)).unsqueeze(0) + offset
    states = model.backbone(
        inputs_embeds=item_vectors[kept].unsqueeze(0), position_ids=positions
    ).last_hidden_state
    user = model.head(states[0, -1])  # (d,)
    if model.output is None:
        return torch.stack([user @ item_vectors[i] for i in range(N_ITEMS)])
    return torch.stack(
        [user @ model.output.weight[i] + model.output.bias[i] for i in range(N_ITEMS)]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"item_repr": "text+id"},
        {"item_repr": "text"},
        {"item_repr": "id", "head_mlp": False},
        {"item_repr": "text+id", "tie_output": False},
        {"item_repr": "text+id", "num_layers": 1},
        {"item_repr": "text+id", "num_layers": 3, "head_mlp": True},
        {"item_repr": "text+id", "positions": "end"},
        {"item_repr": "id", "positions": "end", "num_layers": 1},
        {"item_repr": "text+id", "whiten_text": True},
    ],
)
def test_score_matches_brute_force(overrides):
    model = tiny_model(**overrides)
    with torch.no_grad():
        scores = model.score(HISTORIES)
        expected = torch.stack([reference_scores(model, h) for h in HISTORIES])
    assert scores.shape == (len(HISTORIES), N_ITEMS)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("positions", "position"), [("start", 0), ("end", 4)])
def test_scoring_an_empty_history_reads_the_padding_position(positions, position):
    model = tiny_model(positions=positions)  # max_len 5: "end" puts the padding at 4
    with torch.no_grad():
        states = model.backbone(
            inputs_embeds=model.items()[:1].unsqueeze(0), position_ids=torch.tensor([[position]])
        ).last_hidden_state
        expected = model.head(states[0, 0]) @ model.items()[1:].T
    torch.testing.assert_close(model.score([np.array([], dtype=np.int64)])[0], expected)


@pytest.mark.parametrize("fused", [False, True])
def test_the_cached_item_table_follows_every_weight_change(fused):
    """A fused AdamW step (training's optimizer) updates in place without moving the tensors'
    version counters: the cache must still see it."""
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = model.score(HISTORIES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, fused=fused)
    batch = {"input_ids": torch.tensor([[4, 2, 5]]), "target_ids": torch.tensor([[2, 5, 6]])}
    model.train()
    model(batch).backward()
    optimizer.step()  # updates the id embedding and text projection in place
    model.eval()
    fresh = RecommendationLLM(model.config, N_ITEMS, np.zeros((N_ITEMS, TEXT_DIM), np.float32))
    fresh.load_state_dict(model.state_dict())
    stepped = model.score(HISTORIES)
    assert not torch.allclose(stepped, first)
    torch.testing.assert_close(stepped, fresh.score(HISTORIES))
    model.load_state_dict(before)
    torch.testing.assert_close(model.score(HISTORIES), first)


def test_score_runs_in_eval_mode_and_restores_training_mode():
    model = tiny_model().train()
    first, second = model.score(HISTORIES), model.score(HISTORIES)
    torch.testing.assert_close(first, second)  # no dropout noise
    assert model.training
    assert model.table_cache.computed == 1  # the second request reused the cached item table


def test_forward_loss_equals_full_softmax_cross_entropy_of_score():
    """Positions from the first item: every training position is its prefix scored alone."""
    model = tiny_model(positions="start")
    sequences = [np.array([3, 1, 4, 1]), np.array([5, 9])]
    input_ids, _ = pad_histories([s[:-1] for s in sequences], max_len=5)
    target_ids, _ = pad_histories([s[1:] for s in sequences], max_len=5)
    loss = model({"input_ids": input_ids, "target_ids": target_ids})
    terms = [
        F.cross_entropy(model.score([s[:t]]), torch.tensor([s[t]]))
        for s in sequences
        for t in range(1, len(s))
    ]
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_end_positions_train_each_windows_last_item_where_scoring_puts_it():
    """With positions="end" a training window's last target is predicted from the position
    scoring uses for that history (max_len - 1), whatever the window's length."""
    model = tiny_model(positions="end")
    sequences = [np.array([3, 1, 4, 1]), np.array([5, 9]), np.array([2, 6, 5, 3, 5, 8])]
    inputs = [s[:-1] for s in sequences]
    input_ids, lengths = pad_histories(inputs, max_len=5)
    target_ids = torch.zeros_like(input_ids)
    target_ids[torch.arange(len(sequences)), lengths - 1] = torch.tensor(
        [s[-1] + 1 for s in sequences]
    )
    loss = model({"input_ids": input_ids, "target_ids": target_ids})
    expected = F.cross_entropy(model.score(inputs), torch.tensor([s[-1] for s in sequences]))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="model.positions"):
        tiny_model(positions="middle")


def test_sampled_softmax_loss_runs_and_backpropagates():
    model = tiny_model().train()
    input_ids, _ = pad_histories([np.array([3, 1, 4]), np.array([2, 7])], max_len=5)
    target_ids, _ = pad_histories([np.array([1, 4, 8]), np.array([7, 6])], max_len=5)
    loss = model({"input_ids": input_ids, "target_ids": target_ids}, num_negatives=4)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.items.id_embedding.weight.grad.abs().sum() > 0


def test_sampled_softmax_label_smoothing_spreads_over_target_and_real_negatives():
    # No dropout (eval): the forward pass draws only the negatives. Positions from the first
    # item, so each training position is its prefix scored alone.
    model = tiny_model(positions="start").eval()
    sequences = [np.array([3, 1, 4, 1]), np.array([5, 9])]
    input_ids, _ = pad_histories([s[:-1] for s in sequences], max_len=5)
    target_ids, _ = pad_histories([s[1:] for s in sequences], max_len=5)
    torch.manual_seed(0)
    loss = model({"input_ids": input_ids, "target_ids": target_ids}, 6, label_smoothing=0.3)
    torch.manual_seed(0)
    negatives = torch.randint(0, N_ITEMS, (6,)).tolist()
    terms = []
    for s in sequences:
        for t in range(1, len(s)):
            # A negative equal to the target is masked out, not scored.
            scored = [s[t]] + [n for n in negatives if n != s[t]]
            logits = model.score([s[:t]])[0, scored].unsqueeze(0)
            terms.append(F.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.3))
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_whitened_text_table_is_centred_decorrelated_and_keeps_the_mean_norm():
    model = tiny_model(whiten_text=True)
    raw = tiny_text().astype(np.float64)
    table = model.items.text[1:].double().numpy()  # (n_items, d_text)
    assert np.abs(table.mean(0)).max() < 1e-6
    covariance = np.cov(table.T)
    np.testing.assert_allclose(covariance, covariance[0, 0] * np.eye(TEXT_DIM), atol=1e-6)
    centred = raw - raw.mean(0)
    np.testing.assert_allclose(
        np.linalg.norm(table, axis=1).mean(), np.linalg.norm(centred, axis=1).mean(), rtol=1e-5
    )
    # ZCA, the whitening nearest the raw vectors: each row keeps its direction best.
    matrix = np.linalg.lstsq(centred, table, rcond=None)[0]  # (d_text, d_text)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    assert np.linalg.eigvalsh(matrix).min() > 0


@pytest.mark.parametrize("whiten", [False, True])
def test_text_dim_keeps_the_directions_of_largest_variance(whiten):
    """text_dim=3 of 6: each table column is the centred vectors' projection on one of the 3
    top covariance eigenvectors, largest first (up to the eigenvector's sign), scaled to unit
    variance times one constant that keeps the centred mean norm when whitened."""
    model = tiny_model(text_dim=3, whiten_text=whiten)
    table = model.items.text[1:].double().numpy()  # (n_items, 3)
    assert table.shape == (N_ITEMS, 3) and model.item_llm_dim == TEXT_DIM
    centred = tiny_text().astype(np.float64) - tiny_text().astype(np.float64).mean(0)
    variances, directions = np.linalg.eigh(np.cov(centred.T))  # ascending
    expected = centred @ directions[:, ::-1][:, :3]  # (n_items, 3)
    if whiten:
        expected = expected / np.sqrt(variances[::-1][:3])
        scale = np.linalg.norm(centred, axis=1).mean() / np.linalg.norm(expected, axis=1).mean()
        expected = expected * scale
    for column in range(3):
        sign = np.sign(table[:, column] @ expected[:, column])
        np.testing.assert_allclose(table[:, column], sign * expected[:, column], atol=1e-5)


def test_text_dim_outside_the_item_llm_width_is_named():
    with pytest.raises(ValueError, match=r"model.text_dim: expected 0 .* to 6 .* got 7"):
        tiny_model(text_dim=7)


@pytest.mark.parametrize(
    "overrides", [{"whiten_text": True}, {"text_dim": 4}, {"whiten_text": True, "text_dim": 4}]
)
def test_text_transform_travels_with_the_weights(overrides):
    """A model rebuilt around a placeholder table (as `load_model` does) scores the same."""
    model = tiny_model(**overrides)
    placeholder = np.zeros((N_ITEMS, TEXT_DIM), np.float32)
    rebuilt = RecommendationLLM(model.config, N_ITEMS, placeholder).eval()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.score(HISTORIES), model.score(HISTORIES))


def test_padding_row_is_internal_index_zero():
    input_ids, lengths = pad_histories([np.array([0, 2]), np.array([4, 5, 6, 7])], max_len=3)
    assert input_ids.tolist() == [[1, 3, 0], [6, 7, 8]]
    assert lengths.tolist() == [2, 3]


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="text embeddings"):
        RecommendationLLM(ModelConfig(item_repr="text"), N_ITEMS, None)
    with pytest.raises(ValueError, match="item_repr"):
        RecommendationLLM(ModelConfig(item_repr="title"), N_ITEMS, None)


@pytest.mark.parametrize(("with_bias", "smoothing"), [(False, 0.0), (True, 0.0), (True, 0.2)])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_fused_linear_cross_entropy_matches_autograd_reference(with_bias, smoothing, scale):
    """scale 60: logits hundreds apart, so most targets' softmax probabilities underflow to 0
    and the log-sum-exp must come from the logits, not from the target's probability."""
    chunk = 3 * 50  # several chunks of 3 rows
    generator = torch.Generator().manual_seed(0)
    users = (scale * torch.randn(10, 4, generator=generator)).requires_grad_()
    weights = torch.randn(50, 4, generator=generator, requires_grad=True)
    bias = torch.randn(50, generator=generator, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 50, (10,), generator=generator)
    inputs = [users, weights] + ([bias] if with_bias else [])
    # Scaled by 3: the backward pass must multiply the gradients it computed up front.
    fused = 3 * linear_cross_entropy(users, weights, bias, targets, smoothing, chunk)
    fused_grads = torch.autograd.grad(fused, inputs)
    logits = F.linear(users, weights, bias)
    reference = 3 * F.cross_entropy(logits, targets, label_smoothing=smoothing)
    reference_grads = torch.autograd.grad(reference, inputs)
    torch.testing.assert_close(fused, reference)
    for got, expected in zip(fused_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected)
    with torch.no_grad():  # the value alone, no gradient work
        value = linear_cross_entropy(users, weights, bias, targets, smoothing, chunk)
    assert value.grad_fn is None
    torch.testing.assert_close(3 * value, reference.detach())
