"""Everything that touches Dask: the worker plugin, the slot broker, collections, parquet
runs (plan, manifest, ownership, resume)."""
