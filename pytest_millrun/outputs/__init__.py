"""What a run leaves behind: the results table, the HTML report, snapshot files, stale outputs."""
