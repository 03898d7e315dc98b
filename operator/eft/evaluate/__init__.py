"""Evaluation: BEIR retrieval metrics for base and fine-tuned models, the report, and the promotion decision."""
