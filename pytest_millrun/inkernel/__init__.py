"""Source that runs inside the notebook's kernel: standard library only, nothing of the host's."""
