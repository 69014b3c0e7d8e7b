"""Run a Router without sockets or waiting: mock pools, a fake clock, an injected sleep."""

from __future__ import annotations

import asyncio

from sollol_dask import Node
from sollol_dask._settings import RouterSettings
from sollol_dask.backends import EmbedOptions
from sollol_dask.engine._router import Router
from sollol_dask.testing.mock import MockTransport


class Harness:
    def __init__(self, handlers: dict, clock, **settings) -> None:
        self.clock = clock
        self.sleeps: list[float] = []
        self.transport = MockTransport(handlers)
        self.router = Router(
            RouterSettings(nodes=tuple(Node(url) for url in handlers),
                           opts=EmbedOptions(model="m"), **settings),
            clock=clock, wall_clock=clock, sleep=self.sleep, open_pool=self.transport)

    async def sleep(self, seconds: float) -> None:
        """Time passes at once: the fake clock moves, the loop runs other tasks."""
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def run(self, coro_fn):
        """``coro_fn(router)`` on a fresh loop, then the router closed on that loop."""
        async def main():
            try:
                return await coro_fn(self.router)
            finally:
                await self.router._aclose()

        return asyncio.run(main())

    def state(self, node: str):
        return self.router.balancer.nodes[node]
