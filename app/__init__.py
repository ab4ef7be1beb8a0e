"""Hubside: browse the Hugging Face Hub, download GGUF models and chat with them offline."""

__version__ = "0.1.0"
