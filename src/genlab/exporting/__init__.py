"""genlab-export: a run of `model=transformer` as a Hugging Face model folder (`transformers` reads it back)."""
