"""Contrastive bi-encoder fine-tuning (InfoNCE over 1 positive + hard negatives + in-batch negatives)."""
