"""Identify an artifact: its files, their digests and their formats."""
