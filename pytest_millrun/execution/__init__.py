"""Running one job: papermill with our engine, the kernel around it, and the phrasing of failures."""
