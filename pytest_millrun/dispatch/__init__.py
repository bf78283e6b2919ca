"""Where jobs run: a process pool or a Dask cluster, one module for each side of each."""
