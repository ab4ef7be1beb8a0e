"""Benchmarks (`make bench`): speeds measured against llama.cpp's own llama-bench."""
