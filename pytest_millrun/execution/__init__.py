"""Running one job: papermill with our engine, the kernel around it, the phrasing of failures,
and whether a job must run at all (the cache of incremental runs)."""
