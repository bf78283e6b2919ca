"""Incremental runs: a run's cache key (keys), and whether an earlier output answers (verdicts)."""
