"""The run's options: the one table of them, and the run configuration each front end resolves."""
