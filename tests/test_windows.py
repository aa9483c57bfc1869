"""Training windows cut with numpy equal the per-sequence definition, on random sequences."""

import numpy as np
import pytest

from lite_rec.sequences import make_batch, sampled_prefixes, traversal_windows


def windows_one_by_one(sequences, max_len):
    """The definition: from each sequence's end, windows of max_len + 1 sharing one item."""
    rows = []
    for sequence in sequences:
        for end in range(len(sequence), 1, -max_len):
            rows.append(list(sequence[max(0, end - max_len - 1) : end] + 1))
    return [row + [0] * (max_len + 1 - len(row)) for row in rows]


def prefixes_one_by_one(sequences, max_len, rng):
    rows = []
    for sequence in (s for s in sequences if len(s) >= 2):
        target = int(rng.integers(1, len(sequence)))
        row = list(sequence[max(0, target - max_len) : target + 1] + 1)
        rows.append(row + [0] * (max_len + 1 - len(row)))
    return rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_len", [1, 2, 7, 50])
def test_windows_equal_their_definition(seed, max_len):
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, 500, size=n) for n in rng.integers(0, 3 * max_len + 5, size=40)]
    windows = traversal_windows(sequences, max_len)
    assert windows.tolist() == windows_one_by_one(sequences, max_len)
    prefixes = sampled_prefixes(sequences, max_len, np.random.default_rng(seed))
    assert prefixes.tolist() == prefixes_one_by_one(sequences, max_len, np.random.default_rng(seed))


def test_windows_block_boundaries_and_empty_input(monkeypatch):
    import lite_rec.sequences as sequences_module

    sequences = [np.arange(n) for n in range(30)]
    expected = traversal_windows(sequences, 4)
    monkeypatch.setattr(sequences_module, "WINDOW_BLOCK", 3)  # many blocks, a partial last one
    assert np.array_equal(traversal_windows(sequences, 4), expected)
    assert traversal_windows([], 5).shape == (0, 6)
    assert traversal_windows([np.array([3])], 5).shape == (0, 6)


def test_windows_are_int32_and_batches_int64():
    windows = traversal_windows([np.array([5, 6, 7])], 4)
    assert windows.dtype == np.int32
    batch = make_batch(windows, last_target_only=False)
    assert batch["input_ids"].dtype == batch["target_ids"].dtype
    assert str(batch["input_ids"].dtype) == "torch.int64"
    assert batch["input_ids"].tolist() == [[6, 7]] and batch["target_ids"].tolist() == [[7, 8]]
