"""Lite-LLM4Rec: an Item LLM embeds item text once, a Recommendation LLM reads histories of
those embeddings, and an item projection head scores the whole catalog in one step."""

__version__ = "0.1.0"
