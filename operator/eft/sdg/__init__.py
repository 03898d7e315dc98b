"""Synthetic data generation: questions (with their positive chunks) from the corpus, by an LLM or offline."""
