"""A P5/TIGER-style generative recommender: a T5 encoder reads the history as item-id tokens,
and the decoder generates the next item's id tokens with beam search (beam width = K),
constrained by a prefix trie so that every beam is a valid item. With `prompt="text"` the
history is a P5-style text prompt instead: each item's id tokens followed by its text (title,
genres...) in the Item LLM tokenizer's word pieces, so the model re-reads every history item's
text for every request, as LLM recommenders that take item text in their prompt do.
`decoding="head"` swaps the decoder and beam search for a projection head over the same encoder
(one score per item in one step), isolating what beam-search decoding costs and buys.

Evaluation uses the same leave-one-out splits and `ranking_metrics` as the other models. A
generative model ranks only the items its K beams reach: the target's rank is its position among
the beams (after dropping the user's history items, as full-ranking evaluation does), and a
target outside the beams gets rank n_items, beyond every cut-off. Recall/NDCG@k for k <= K are
therefore exact; MRR is a lower bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lite_rec.baselines.item_codes import (
    EOS_TOKEN,
    PAD_TOKEN,
    ItemCodes,
    PrefixTrie,
    semantic_codes,
    sequential_codes,
)
from lite_rec.config import TrainConfig
from lite_rec.evaluate import evaluate
from lite_rec.metrics import ranking_metrics
from lite_rec.sequences import SequenceData, length_batches
from lite_rec.trainer import Batch, Trainer, TrainResult, seed_everything

ID_SCHEMES = ("sequential", "semantic")
DECODINGS = ("beam", "head")
PROMPTS = ("ids", "text")


@dataclass
class GenerativeConfig:
    id_scheme: str = "sequential"  # sequential (P5 sequential indexing) | semantic (TIGER)
    decoding: str = "beam"  # beam (T5 decoder, beam search) | head (T5 encoder + projection)
    prompt: str = "ids"  # ids: id tokens per history item | text: id tokens + the item's text
    text_tokens: int = 16  # prompt=text: word pieces of each item's text, at most
    tokenizer: str = "sentence-transformers/all-MiniLM-L6-v2"  # prompt=text: the Item LLM's
    digit_base: int = 10  # sequential: the base the item number is written in
    codebook_size: int = 16  # semantic: k-means clusters per level
    semantic_levels: int = 2  # semantic: k-means levels (a disambiguation code follows)
    hidden_size: int = 64  # d_model, as the Recommendation LLM's width
    num_layers: int = 2  # encoder layers, and as many decoder layers
    num_heads: int = 2
    dropout: float = 0.1
    max_len: int = 20  # history items the encoder reads (each is `levels` tokens)
    examples_per_user: int = 0  # targets drawn per user per epoch; 0: every training position
    epochs: int = 30  # at most, with train.patience; each epoch validates with beam search
    valid_beams: int = 10  # beam width while validating each epoch (NDCG@10 picks the epoch)
    beam_batch_size: int = 64


def item_codes(
    data: SequenceData, config: GenerativeConfig, text_embeddings: np.ndarray | None, seed: int
) -> ItemCodes:
    """The item ids of `config.id_scheme`; semantic ids need the Item LLM vectors."""
    if config.id_scheme == "sequential":
        return sequential_codes(data.train_sequences(), data.n_items, config.digit_base)
    if config.id_scheme == "semantic":
        if text_embeddings is None:
            raise ValueError("generative id_scheme=semantic needs the Item LLM embeddings")
        return semantic_codes(text_embeddings, config.codebook_size, config.semantic_levels, seed)
    raise ValueError(
        f"generative id_scheme: expected one of {ID_SCHEMES}, got {config.id_scheme!r}"
    )


def t5_config(config: GenerativeConfig, vocab_size: int):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=config.hidden_size,
        d_kv=config.hidden_size // config.num_heads,
        d_ff=4 * config.hidden_size,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        pad_token_id=PAD_TOKEN,
        eos_token_id=EOS_TOKEN,
        decoder_start_token_id=PAD_TOKEN,
    )


def text_prompt_tokens(
    texts: Sequence[str], config: GenerativeConfig, first_token: int
) -> tuple[list[np.ndarray], int]:
    """Each item's text as at most `config.text_tokens` word pieces of the Item LLM's
    tokenizer, shifted to start at `first_token` (after the id tokens).
    -> (token array per item, number of text tokens in the vocabulary)"""
    from transformers import AutoTokenizer

    from lite_rec.item_embeddings import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.tokenizer))
    pieces = tokenizer(
        list(texts), add_special_tokens=False, truncation=True, max_length=config.text_tokens
    )["input_ids"]
    return [np.asarray(p, dtype=np.int64) + first_token for p in pieces], len(tokenizer)


class ItemTokenEncoderInputs(nn.Module):
    """What both decodings share: item codes and how a history becomes encoder tokens."""

    def __init__(
        self, config: GenerativeConfig, codes: ItemCodes, texts: Sequence[str] | None = None
    ):
        super().__init__()
        if config.prompt not in PROMPTS:
            raise ValueError(f"generative prompt: expected one of {PROMPTS}, got {config.prompt!r}")
        self.config = config
        self.codes = codes
        self.item_tokens = codes.tokens()  # (n_items, L)
        self.n_items = len(self.item_tokens)
        self.vocab_size = codes.vocab_size
        self.prompt_tokens = list(self.item_tokens)  # per item: the tokens a history shows
        if config.prompt == "text":
            if texts is None or len(texts) != self.n_items:
                raise ValueError("generative prompt=text needs one text per item")
            pieces, text_vocab = text_prompt_tokens(texts, config, codes.vocab_size)
            self.prompt_tokens = [
                np.concatenate([ids, text])
                for ids, text in zip(self.item_tokens, pieces, strict=True)
            ]
            self.vocab_size += text_vocab

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encoder_inputs(self, histories: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """The last `max_len` items of each history as their prompt tokens (id tokens, then
        text with prompt=text), oldest first, right-padded. -> input_ids, attention_mask (B, T)"""
        prompts = [
            np.concatenate(
                [self.prompt_tokens[i] for i in np.asarray(h)[-self.config.max_len :]]
                or [np.empty(0, dtype=np.int64)]
            )
            for h in histories
        ]
        width = max(max((len(p) for p in prompts), default=0), 1)
        input_ids = np.full((len(prompts), width), PAD_TOKEN, dtype=np.int64)
        for row, prompt in enumerate(prompts):
            input_ids[row, : len(prompt)] = prompt
        input_ids = torch.from_numpy(input_ids).to(self.device)
        return {"input_ids": input_ids, "attention_mask": (input_ids != PAD_TOKEN).long()}


class GenerativeRecommender(ItemTokenEncoderInputs):
    """T5 over item-id tokens; `recommend` runs trie-constrained beam search."""

    def __init__(
        self, config: GenerativeConfig, codes: ItemCodes, texts: Sequence[str] | None = None
    ):
        super().__init__(config, codes, texts)
        from transformers import T5ForConditionalGeneration

        self.trie = PrefixTrie(self.item_tokens)
        self.t5 = T5ForConditionalGeneration(t5_config(config, self.vocab_size))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced cross-entropy of the target's id tokens."""
        return self.t5(**{name: t.to(self.device) for name, t in batch.items()}).loss

    def _allowed(self, batch_id: int, decoded: torch.Tensor) -> list[int]:
        return self.trie.allowed(decoded[1:].tolist())  # decoded[0] is the start token

    @torch.no_grad()
    def recommend(self, histories: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """K beams per history, best first: item indices (B, K) and their log-probabilities
        (B, K). Beams are distinct items, as every beam is a distinct trie path."""
        was_training = self.training
        self.eval()
        k = min(k, self.n_items)
        items = np.full((len(histories), k), -1, dtype=np.int64)
        scores = np.full((len(histories), k), -np.inf, dtype=np.float32)
        order = np.argsort([len(h) for h in histories], kind="stable")
        for start in range(0, len(order), self.config.beam_batch_size):
            users = order[start : start + self.config.beam_batch_size]
            output = self.t5.generate(
                **self.encoder_inputs([histories[u] for u in users]),
                num_beams=k,
                num_return_sequences=k,
                max_new_tokens=self.codes.levels,
                do_sample=False,
                length_penalty=0.0,  # every item has the same length: rank by log-probability
                prefix_allowed_tokens_fn=self._allowed,
                output_scores=True,
                return_dict_in_generate=True,
            )
            sequences = output.sequences[:, 1:].reshape(len(users), k, -1).tolist()
            items[users] = [[self.trie.item_of(beam) for beam in row] for row in sequences]
            scores[users] = output.sequences_scores.reshape(len(users), k).cpu().numpy()
        self.train(was_training)
        return items, scores


class EncoderHeadRecommender(ItemTokenEncoderInputs):
    """The generative model's T5 encoder with a projection head instead of a decoder: the
    mean of the encoder's token states scored against every item at once."""

    def __init__(
        self, config: GenerativeConfig, codes: ItemCodes, texts: Sequence[str] | None = None
    ):
        super().__init__(config, codes, texts)
        from transformers import T5EncoderModel

        self.encoder = T5EncoderModel(t5_config(config, self.vocab_size))
        self.head = nn.Linear(config.hidden_size, self.n_items)

    def users(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> (B, d) mean of the real tokens' encoder states"""
        hidden = self.encoder(**inputs).last_hidden_state  # (B, T, d)
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the catalog for the target item (`targets`, item indices)."""
        inputs = {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask")}
        logits = self.head(self.users(inputs))  # (B, n_items)
        return nn.functional.cross_entropy(logits, batch["targets"].to(self.device))

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """-> (B, n_items), in eval mode; the previous mode is restored."""
        was_training = self.training
        self.eval()
        scores = self.head(self.users(self.encoder_inputs(histories)))
        self.train(was_training)
        return scores


def beam_ranks(
    beams: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    n_items: int,
    exclude_history: bool = True,
) -> np.ndarray:
    """1-based rank of each target among its beams (history items other than the target
    dropped first); n_items when the target is not among them."""
    ranks = np.full(len(targets), n_items, dtype=np.int64)
    for user, (row, target) in enumerate(zip(beams, targets, strict=True)):
        seen = set(histories[user].tolist()) - {int(target)} if exclude_history else set()
        kept = [item for item in row.tolist() if item >= 0 and item not in seen]
        if target in kept:
            ranks[user] = kept.index(target) + 1
    return ranks


def evaluate_generative(
    model: GenerativeRecommender, data: SequenceData, split: str, k: int = 20
) -> dict[str, float]:
    """Recall/NDCG@{5,10,20} and MRR on `split` from K-beam recommendations."""
    histories, targets = data.histories_and_targets(split)
    beams, _ = model.recommend(histories, k)
    return ranking_metrics(beam_ranks(beams, histories, targets, data.n_items))


def training_examples(
    sequences: Sequence[np.ndarray], per_user: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(user, target position) pairs: every position after the first, or `per_user` of them."""
    examples = []
    for user, sequence in enumerate(sequences):
        positions = np.arange(1, len(sequence))
        if 0 < per_user < len(positions):
            positions = np.sort(rng.choice(positions, per_user, replace=False))
        examples.extend((user, int(p)) for p in positions)
    return examples


def train_generative(
    data: SequenceData,
    config: GenerativeConfig,
    train_config: TrainConfig,
    text_embeddings: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
    texts: Sequence[str] | None = None,
) -> TrainResult:
    """Teacher-forced training on (history -> next item) for the training positions, batches
    of similar history length in shuffled order, `config.epochs` at most (the rest of
    `train_config` applies); the best epoch by validation NDCG@10. `texts` (one per item) are
    needed with `config.prompt="text"`."""
    seed_everything(train_config.seed)
    if config.decoding not in DECODINGS:
        raise ValueError(
            f"generative decoding: expected one of {DECODINGS}, got {config.decoding!r}"
        )
    codes = item_codes(data, config, text_embeddings, train_config.seed)
    beam = config.decoding == "beam"
    recommender = GenerativeRecommender if beam else EncoderHeadRecommender
    model = recommender(config, codes, texts)
    sequences = data.train_sequences()

    def batches(epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([train_config.seed, epoch])
        examples = training_examples(sequences, config.examples_per_user, rng)
        lengths = [min(position, config.max_len) for _, position in examples]
        for rows in length_batches(lengths, train_config.batch_size, rng):
            chosen = [examples[i] for i in rows]
            histories = [sequences[u][:p] for u, p in chosen]
            targets = np.array([sequences[u][p] for u, p in chosen])
            batch = model.encoder_inputs(histories)
            if beam:
                batch["labels"] = torch.from_numpy(model.item_tokens[targets])  # (B, L)
            else:
                batch["targets"] = torch.from_numpy(targets)  # (B,)
            yield batch

    def validate(m: nn.Module) -> dict[str, float]:
        if beam:
            return evaluate_generative(m, data, "valid", config.valid_beams)
        return evaluate(m, data, "valid", train_config.eval_batch_size)

    return Trainer(
        model,
        batches,
        lambda m, batch: m(batch),
        validate,
        dataclasses.replace(train_config, epochs=config.epochs),
        log=log,
    ).fit()
