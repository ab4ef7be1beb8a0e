"""The inference engine: llama-cpp-python in an engine process of its own (Qt-free)."""
