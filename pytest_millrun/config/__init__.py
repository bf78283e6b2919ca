"""The run's options: one table of every option, and the run configuration each front end resolves."""
