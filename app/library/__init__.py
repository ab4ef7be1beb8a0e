"""Models on disk: scanning, GGUF header metadata, deletion and disk usage (Qt-free)."""
