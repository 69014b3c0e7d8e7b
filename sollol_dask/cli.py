"""``sollol-dask``: the command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import __version__
from ._exceptions import SollolError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sollol-dask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sollol-dask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the router does")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim(sub)
    _add_demo(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args)
    except SollolError as err:
        print(f"sollol-dask: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sollol-dask: interrupted", file=sys.stderr)
        return 130


# -- sim -------------------------------------------------------------------------------

def _add_sim(sub) -> None:
    from .sim import PROFILES

    p = sub.add_parser("sim", help="serve a simulated Ollama node (for tests and demos)",
                       description="Serve a simulated Ollama-compatible embedding node.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11434, help="port (0 picks a free one)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="gpu",
                   help="speed profile: gpu ~117/s, cpu ~15/s, llamacpp 8 slots, instant")
    p.add_argument("--model", default="nomic-embed-text")
    p.add_argument("--dimension", type=int, default=768)
    p.add_argument("--load-seconds", type=float, help="cold model load time")
    p.add_argument("--slots", type=int, help="parallel slots (llama.cpp -np)")
    p.add_argument("--slowdown", type=float, default=1.0, help="multiply model time")
    p.add_argument("--digest-variant", default="", help="report a different model digest")
    for fault in ("eof-every", "nan-every", "malformed-every", "truncated-every", "reset-every",
                  "die-after", "hang-after"):
        p.add_argument(f"--{fault}", type=int, default=0, metavar="N", help="fault injection")
    p.set_defaults(run=_run_sim)


def _run_sim(args) -> int:
    from .sim import Faults, SimNode

    changes = {k: v for k, v in (("load_seconds", args.load_seconds), ("slots", args.slots))
               if v is not None}
    faults = Faults(eof_every=args.eof_every, nan_every=args.nan_every,
                    malformed_every=args.malformed_every, truncated_every=args.truncated_every,
                    reset_every=args.reset_every, die_after=args.die_after,
                    hang_after=args.hang_after, slowdown=args.slowdown)
    node = SimNode(args.profile, model=args.model, dimension=args.dimension, host=args.host,
                   port=args.port, digest_variant=args.digest_variant, faults=faults, **changes)

    async def serve() -> None:
        await node.serve()
        print(f"sollol-dask sim ({node.profile.name}, {args.model}) listening on {node.url}",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(serve())
    return 0


# -- demo ------------------------------------------------------------------------------

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="embed a generated corpus on simulated nodes",
                       description="Start simulated nodes of mixed speed on 127.0.0.1 and "
                                   "embed a generated corpus with them.")
    p.add_argument("--rows", type=int, default=4000, help="documents to generate")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo(rows=args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
