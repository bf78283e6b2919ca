"""Coverage of the code notebooks run: the host's side of measuring kernels (issue 33)."""
