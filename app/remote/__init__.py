"""Models served elsewhere: OpenAI-compatible endpoints (llama-server, vLLM, Ollama, another Hubside)."""
