"""Snapshot checks: recorded values (checks, store, scope) and figures against baselines."""
