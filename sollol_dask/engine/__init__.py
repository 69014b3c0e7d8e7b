"""The asyncio embedding engine, one per process: the router, fleet membership, endpoints,
slot sources. Never imports distributed."""
