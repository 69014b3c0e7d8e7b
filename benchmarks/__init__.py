"""sollol_dask benchmarks: `python -m benchmarks [scenario ...]` (what `make bench` runs)."""
