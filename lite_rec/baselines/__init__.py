"""Baselines run through the same data, splits and metrics as Lite-LLM4Rec.

- `generative`: a P5/TIGER-style T5 that generates the next item's id tokens with beam search
  constrained by a prefix trie (`item_codes` holds the id schemes and the trie).
- `sasrec_bce`: SASRec's original binary cross-entropy loss (one negative per position) on the
  id-only configuration of our model; SASRec with cross-entropy is `model.item_repr=id`.
- `bert4rec`: a bidirectional encoder trained by masked-item prediction.
- `random_item_llm`: Item LLM vectors from the same architecture with random weights.

Each trains through `lite_rec.trainer.Trainer`, as Lite-LLM4Rec does, without a checkpoint and
without refit epochs.
"""
