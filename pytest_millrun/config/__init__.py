"""The run's options: one table of every option, and the configuration each front end resolves."""
