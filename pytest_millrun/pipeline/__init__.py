"""One run below the front ends: planning, the cache verdict, dispatch, snapshots, results."""
