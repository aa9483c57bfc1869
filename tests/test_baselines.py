import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from lite_rec.baselines.bert4rec import masked_windows, train_bert4rec
from lite_rec.baselines.generative import (
    GenerativeConfig,
    GenerativeRecommender,
    beam_ranks,
    train_generative,
    training_examples,
)
from lite_rec.baselines.item_codes import (
    EOS_TOKEN,
    PrefixTrie,
    semantic_codes,
    sequential_codes,
)
from lite_rec.baselines.sasrec_bce import train_sasrec_bce
from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.item_quality import genre_neighbour_agreement, item_genres
from lite_rec.sequences import SequenceData
from tests.conftest import assert_lr_follows_plateaus, cyclic_data


def walk(trie: PrefixTrie, prefix: tuple[int, ...] = ()) -> set[tuple[int, ...]]:
    """Every complete sequence reachable by following `allowed` from `prefix`."""
    if len(prefix) == trie.length:
        assert trie.allowed(prefix) == [EOS_TOKEN]
        return {prefix}
    return set().union(*(walk(trie, prefix + (t,)) for t in trie.allowed(prefix)))


@pytest.mark.parametrize("scheme", ["sequential", "semantic"])
def test_trie_only_admits_valid_item_ids(scheme):
    if scheme == "sequential":
        codes = sequential_codes([np.array([4, 2, 4, 0])], n_items=7, base=3)
    else:
        vectors = np.random.default_rng(0).normal(size=(7, 4))
        codes = semantic_codes(np.vstack([vectors, vectors[:2]]), codebook_size=2, levels=2)
    tokens = codes.tokens()
    trie = PrefixTrie(tokens)
    assert walk(trie) == {tuple(row) for row in tokens.tolist()}
    assert [trie.item_of(row) for row in tokens.tolist()] == list(range(len(tokens)))
    assert trie.allowed((999,)) == [EOS_TOKEN]
    assert trie.item_of((999,) * trie.length) == -1
    assert tokens.max() < codes.vocab_size


def test_sequential_codes_number_items_by_first_appearance():
    codes = sequential_codes([np.array([4, 2, 4]), np.array([0, 2])], n_items=5, base=10)
    assert codes.codes[[4, 2, 0, 1, 3], 0].tolist() == [0, 1, 2, 3, 4]


def test_semantic_codes_tell_apart_identical_items():
    vectors = np.repeat(np.eye(3), 3, axis=0)  # three items per distinct vector
    codes = semantic_codes(vectors, codebook_size=3, levels=1)
    assert len({tuple(row) for row in codes.codes.tolist()}) == 9
    assert sorted(codes.codes[:3, 1].tolist()) == [0, 1, 2]  # the disambiguation code
    assert codes.sizes == (3, 3)


def tiny_generative(data: SequenceData) -> GenerativeRecommender:
    torch.manual_seed(0)
    config = GenerativeConfig(hidden_size=16, num_layers=1, num_heads=2, digit_base=3)
    return GenerativeRecommender(config, sequential_codes(data.train_sequences(), data.n_items, 3))


def test_beam_search_returns_k_distinct_valid_items_sorted_by_score():
    data = cyclic_data(8, 16)
    model = tiny_generative(data)
    items, scores = model.recommend(data.histories_and_targets("test")[0][:5], k=6)
    assert items.shape == scores.shape == (5, 6)
    for row, row_scores in zip(items, scores, strict=True):
        assert len(set(row.tolist())) == 6 and row.min() >= 0 and row.max() < data.n_items
        assert np.all(np.diff(row_scores) <= 1e-6)


def test_beam_ranks_drop_history_and_count_misses_beyond_k():
    beams = np.array([[3, 1, 2], [0, 5, 6]])
    ranks = beam_ranks(beams, [np.array([3]), np.array([0])], np.array([2, 9]), n_items=50)
    assert ranks.tolist() == [2, 50]  # item 3 was seen; target 9 is not among the beams


TITLES = ["toy story", "jumanji", "heat", "sabrina", "casino", "comedy drama", "toy", "heat heat"]


def test_text_prompt_shows_each_history_item_as_id_tokens_then_its_text(tiny_model):
    data = cyclic_data(8, 16)
    config = GenerativeConfig(hidden_size=16, num_layers=1, num_heads=2, digit_base=3)
    config.prompt, config.tokenizer, config.text_tokens = "text", tiny_model, 1
    codes = sequential_codes(data.train_sequences(), data.n_items, 3)
    model = GenerativeRecommender(config, codes, TITLES)
    ids_only = GenerativeRecommender(GenerativeConfig(digit_base=3), codes)

    tokens = model.encoder_inputs([np.array([5, 2])])["input_ids"][0].tolist()
    first_word = {5: "comedy", 2: "heat"}  # text_tokens=1 keeps each title's first word
    vocab = model_tokenizer_vocab(tiny_model)
    expected = []
    for item in (5, 2):
        expected += [*codes.tokens()[item].tolist(), codes.vocab_size + vocab[first_word[item]]]
    assert tokens == expected
    assert model.vocab_size == codes.vocab_size + len(vocab)
    assert ids_only.encoder_inputs([np.array([5, 2])])["input_ids"][0].tolist() == [
        *codes.tokens()[5].tolist(),
        *codes.tokens()[2].tolist(),
    ]
    with pytest.raises(ValueError, match="one text per item"):
        GenerativeRecommender(config, codes, TITLES[:3])


def model_tokenizer_vocab(path: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).get_vocab()


@pytest.mark.parametrize("prompt", ["ids", "text"])
def test_tiny_generative_model_overfits_training_targets(prompt, tiny_model):
    data = cyclic_data(8, 16)
    torch.manual_seed(0)
    config = GenerativeConfig(hidden_size=32, num_layers=1, num_heads=2, dropout=0.0)
    config.prompt, config.tokenizer = prompt, tiny_model
    codes = sequential_codes(data.train_sequences(), 8, base=3)
    model = GenerativeRecommender(config, codes, TITLES)
    sequences = data.train_sequences()
    examples = training_examples(sequences, 0, np.random.default_rng(0))
    histories = [sequences[user][:position] for user, position in examples]
    targets = np.array([sequences[user][position] for user, position in examples])
    batch = model.encoder_inputs(histories)
    batch["labels"] = torch.from_numpy(model.item_tokens[targets])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):  # teacher forcing, the whole training set as one batch
        loss = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    beams, _ = model.recommend(histories, k=3)
    ranks = beam_ranks(beams, histories, targets, data.n_items, exclude_history=False)
    assert (ranks == 1).all(), ranks  # Recall@1 = 1 on the training targets


def test_train_generative_learns_and_keeps_the_best_epoch():
    data = cyclic_data(8, 16)
    config = GenerativeConfig(hidden_size=32, num_layers=1, num_heads=2, dropout=0.0, epochs=8)
    train_config = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, patience=100, seed=1)
    result = train_generative(data, config, train_config)
    best = max(row["valid_ndcg@10"] for row in result.history)
    assert result.history[result.best_epoch - 1]["valid_ndcg@10"] == best > 0.5


def small_model_config() -> ModelConfig:
    return ModelConfig(hidden_size=16, num_layers=1, num_heads=2, dropout=0.1, max_len=6)


def test_sasrec_bce_and_bert4rec_train_and_evaluate():
    data = cyclic_data(8, 16)
    train_config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_steps=1, seed=0)
    for result in (
        train_sasrec_bce(data, small_model_config(), train_config),
        train_bert4rec(data, small_model_config(), train_config),
    ):
        assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
        assert np.isfinite([row["loss"] for row in result.history]).all()
        assert 0.0 <= result.history[-1]["valid_recall@10"] <= 1.0
        assert result.model.score([np.array([1, 2])]).shape == (1, data.n_items)


def test_baselines_decay_the_learning_rate_on_a_plateau():
    data = cyclic_data(8, 16)
    train_config = TrainConfig(
        epochs=8,
        batch_size=8,
        lr=5e-2,
        warmup_steps=1,
        seed=0,
        patience=100,
        lr_decay=0.5,
        lr_decay_patience=1,
        min_delta=0.005,
    )
    result = train_sasrec_bce(data, small_model_config(), train_config)
    assert_lr_follows_plateaus(result.history, 5e-2, 0.5, min_delta=0.005)


def test_masked_windows_mask_at_least_one_item_per_window():
    windows = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    batch = masked_windows(windows, mask_token=9, mask_prob=0.0, rng=np.random.default_rng(0))
    assert batch["input_ids"].tolist() == [[1, 2, 9], [4, 9, 0]]
    assert batch["labels"].tolist() == [[0, 0, 3], [0, 5, 0]]


def test_item_quality_on_a_hand_made_case():
    items = pd.DataFrame(
        {"genres": ["Comedy|Romance", "Comedy", "Drama", "Drama, War", "(no genres listed)"]}
    )
    genres = item_genres(items)
    assert genres[0] == {"Comedy", "Romance"} and genres[3] == {"Drama", "War"} and not genres[4]
    # Items 0-1 and 2-3 are each other's nearest neighbours; item 4 (no genre) is ignored.
    vectors = np.array([[1, 0.1], [1, 0.2], [0.1, 1], [0.2, 1], [1, 0.15]])
    nearest = genre_neighbour_agreement(vectors, genres, k=1)
    assert nearest["neighbour_share"] == 1.0 and nearest["items"] == 4
    everyone = genre_neighbour_agreement(vectors, genres, k=3)  # all others: same as random
    assert everyone["neighbour_share"] == pytest.approx(1 / 3)
    assert everyone["random_share"] == pytest.approx(1 / 3)


def test_generative_head_replaces_beam_search_on_the_same_encoder():
    data = cyclic_data(8, 16)
    config = GenerativeConfig(hidden_size=16, num_layers=1, num_heads=2, decoding="head", epochs=2)
    result = train_generative(data, config, TrainConfig(batch_size=8, lr=1e-2, warmup_steps=1))
    beam = GenerativeRecommender(config, result.model.codes)
    beam_shapes = {k.removeprefix("t5."): v.shape for k, v in beam.state_dict().items()}
    for name, weights in result.model.encoder.state_dict().items():
        assert beam_shapes[name] == weights.shape, name  # the beam model's very encoder
    assert result.model.score([np.array([1, 2])]).shape == (1, data.n_items)
    assert len(result.history) == 2


def test_baselines_keep_their_best_epoch_whatever_train_refit_epochs_says():
    """The baselines have no refit phase: train.refit_epochs leaves them as they were."""
    data = cyclic_data(8, 16)
    train_config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_steps=1, seed=0)
    plain = train_sasrec_bce(data, small_model_config(), train_config)
    refit_config = dataclasses.replace(train_config, refit_epochs=2)
    refit = train_sasrec_bce(data, small_model_config(), refit_config)
    assert refit.refit_history == [] and refit.best_epoch == plain.best_epoch
    expected, actual = plain.model.state_dict(), refit.model.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert [row["loss"] for row in refit.history] == [row["loss"] for row in plain.history]
