"""Snapshot checks: recorded values (checks, store, scope) and figures (figures) against baselines."""
