"""Pure logic and shared data: params, suites, names, discovery, results: no kernel, no pytest."""
