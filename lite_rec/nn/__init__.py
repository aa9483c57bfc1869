"""The Recommendation LLM's building blocks that `lite_rec/model.py` uses and a reader of it
need not open: the fused full-catalog loss, the sampled-softmax loss, the text table's
whitening and principal components, GPT-2's last-position fast path and the item-table cache."""
