"""Conversations and messages in SQLite, prompt building and context trimming (Qt-free)."""
