"""Running one job: papermill with our engine, the kernel around it, the phrasing of failures."""
