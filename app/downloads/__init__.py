"""Resumable, verified downloads and their persisted job queue (Qt-free)."""
