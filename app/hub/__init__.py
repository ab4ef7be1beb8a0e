"""Hub client over huggingface_hub.HfApi, GGUF variant grouping and memory-fit estimates (Qt-free)."""
