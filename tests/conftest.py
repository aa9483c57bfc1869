import os
import signal
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5Model,
)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """Each test starts with the session's SIGTERM and SIGINT handlers. Dagster's in-process
    execution maps SIGTERM to whatever SIGINT does, for the rest of the process; where the
    suite runs in the background (SIGINT ignored), that would leave SIGTERM ignored for every
    later test and for the processes they start."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


def shared_dataset(name: str) -> Path:
    """A benchmark dataset from ../shared/datasets, or skip when this machine lacks it."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def write_movielens(directory: Path, users: int = 6, items: int = 6) -> Path:
    """A tiny, valid MovieLens-csv dataset in which every user rated every item."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, users + 1):
        for item in range(1, items + 1):
            rows.append(f"{user},{item},{1 + (user + item) % 5}.0,{1_000_000 + 10 * item + user}")
    (directory / "ratings.csv").write_text("\n".join(rows) + "\n")
    titles = ["movieId,title,genres"] + [
        f'{item},"Movie {item}, The (199{item})",Comedy|Drama' for item in range(1, items + 1)
    ]
    (directory / "movies.csv").write_text("\n".join(titles) + "\n")
    return directory


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = "toy story jumanji heat sabrina casino title genres comedy drama adventure : ; , ( )"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer BERT and a word-level tokenizer saved like a hub model."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    words = SPECIALS + WORDS.split() + [str(digit) for digit in range(10)]
    vocab = {word: index for index, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    ).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_t5(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer T5 with the tiny BERT's tokenizer, saved like a hub model."""
    directory = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        decoder_start_token_id=0,
    )
    T5Model(config).save_pretrained(directory)
    return str(directory)


def cyclic_data(n_items: int, n_users: int, min_length: int = 5, spread: int = 3):
    """User u walks the item cycle from item u % n_items for min_length + u % spread steps: the
    next item is always knowable, so a model that learns reaches high recall. Split as
    `lite-rec prepare` splits (`leave_one_out_split`)."""
    import numpy as np
    import pandas as pd

    from lite_rec.sequences import sequences_from_frames
    from lite_rec.split import leave_one_out_split

    users = [u for u in range(n_users) for _ in range(min_length + u % spread)]
    steps = np.concatenate([np.arange(min_length + u % spread) for u in range(n_users)])
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in (np.array(users, dtype=np.int64) + steps) % n_items],
            "timestamp": steps.astype(np.int64),
        }
    )
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]})
    return sequences_from_frames(items, leave_one_out_split(interactions))


def assert_lr_follows_plateaus(
    history: list[dict], lr: float, decay: float, min_delta: float
) -> None:
    """Each epoch's rate is `lr` x `decay` per earlier epoch without a validation NDCG@10
    better by more than `min_delta` (lr_decay_patience=1), and at least one decay happened."""
    best = -1.0
    for row in history:
        assert row["lr"] == pytest.approx(lr), history
        if row["valid_ndcg@10"] > best + min_delta:
            best = row["valid_ndcg@10"]
        else:
            lr *= decay
    assert any(row["lr"] < history[0]["lr"] for row in history), "no plateau: checks nothing"
