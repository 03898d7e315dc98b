"""Data preparation: leakage-free train/test split, the BEIR test set, hard-negative mining, multi-hop unrolling."""
