"""embedding-finetune-operator: documents in, a fine-tuned, evaluated and served embedding model out."""

__version__ = "0.1.0"
