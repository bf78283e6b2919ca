"""Running one notebook: papermill with our engine, the kernel around it, failures in words."""
