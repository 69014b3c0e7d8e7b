"""Pure decisions with an injected clock: no I/O, no asyncio, no Dask (see the modules)."""
