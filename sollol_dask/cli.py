"""``sollol-dask``: the command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
    _add_embed(sub)
    _add_status(sub)
    _add_sim(sub)
    _add_demo(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args)
    except SollolError as err:
        notes = "".join(f"\n  {note}" for note in getattr(err, "__notes__", ()))
        print(f"sollol-dask: error: {err}{notes}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sollol-dask: interrupted", file=sys.stderr)
        return 130


# -- embed -----------------------------------------------------------------------------

def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="embed a parquet corpus into parquet with an embedding column",
        description="Embed the text column of a parquet corpus (file, directory or glob) on a "
                    "fleet of nodes; writes part files plus a manifest to DST. Rerunning the "
                    "same command resumes: finished parts are skipped.")
    p.add_argument("src", help="input parquet file, directory or glob")
    p.add_argument("dst", help="output directory")
    p.add_argument("--column", default="text", help="text column (default: text)")
    p.add_argument("--output-column", default="embedding")
    p.add_argument("--model", required=True, help="embedding model, e.g. nomic-embed-text")
    p.add_argument("--node", action="append", default=[], metavar="URL",
                   help="Ollama node URL (repeat); default: $SOLLOL_NODES or $OLLAMA_HOST")
    p.add_argument("--openai-node", action="append", default=[], metavar="URL",
                   help="OpenAI-compatible node URL (llama.cpp, vLLM, TEI, Infinity)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster for this run)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="HTTP header sent to every node (repeat); the value shows in shell "
                        "history and ps: prefer --header-env for tokens")
    p.add_argument("--header-env", action="append", default=[], metavar="NAME=VAR",
                   help="HTTP header whose value is read from environment variable VAR on "
                        "every Dask worker (repeat); the value never travels in the cluster")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", metavar="PATH",
                     help="PEM file of CA certificates to verify https:// nodes with (a "
                          "private CA); it must exist on every worker")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify https:// nodes' certificates (warns)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                      help="skip parts already written (the default)")
    mode.add_argument("--overwrite", dest="overwrite", action="store_true",
                      help="delete the parts DST's manifest lists and start over")
    p.add_argument("--rows-per-part", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per request at most (default 512; nodes get ~1 s of work each)")
    p.add_argument("--on-invalid", choices=("record", "raise", "null"), default="record",
                   help="rows that cannot be embedded (not text, invalid Unicode, too long, "
                        "answered wrongly): null vector + listed in DST/_errors (record, the "
                        "default); fail naming the row (raise); null non-text values (null)")
    p.add_argument("--length-policy", choices=("truncate", "reject"), default=None,
                   help="texts longer than the model's context: the server cuts them "
                        "(truncate, Ollama's default) or they are row errors naming their "
                        "length (reject)")
    p.add_argument("--retry-errors", action="store_true",
                   help="also embed again the rows DST/_errors lists (nothing else written "
                        "is recomputed)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(run=_run_embed)


def _run_embed(args) -> int:
    from ._embedder import Embedder
    from ._node import Node, resolve_nodes

    headers = _headers(args.header, args.header_env)
    nodes = [*args.node, *(Node(url, api="openai") for url in args.openai_node)] or None
    if headers:
        nodes = [dataclasses.replace(n, headers={**(n.headers or {}), **headers})
                 for n in resolve_nodes(nodes)]
    verify = False if args.insecure else (args.ca_bundle or None)  # None: dask.config
    _quiet_lost_scheduler()
    truncate = None if args.length_policy is None else args.length_policy == "truncate"
    with Embedder(nodes, model=args.model, batch_size=args.batch_size, verify=verify,
                  truncate=truncate) as emb:
        report = emb.embed_parquet(args.src, args.dst, column=args.column,
                                   output_column=args.output_column, client=args.scheduler,
                                   overwrite=args.overwrite, rows_per_part=args.rows_per_part,
                                   progress=args.progress, on_invalid=args.on_invalid,
                                   retry_errors=args.retry_errors)
    print(report)
    return 0


def _headers(literal: list[str], from_env: list[str]) -> dict:
    from ._exceptions import ConfigurationError
    from ._secrets import FromEnv

    headers: dict = {}
    for item in literal:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            # Never echo the item: it may hold a token.
            raise ConfigurationError("--header takes 'Name: value' (a colon after the name)")
        headers[name.strip()] = value.strip()
    for item in from_env:
        name, eq, var = item.partition("=")
        if not eq or not name.strip() or not var.strip():
            raise ConfigurationError(f"--header-env takes NAME=VARIABLE, not {item!r}")
        headers[name.strip()] = FromEnv(var.strip())
    return headers


class _DropLostSchedulerNoise(logging.Filter):
    """When the scheduler dies, distributed's client logs its own reconnect attempt, cut
    short as the run's client closes, as an ERROR ("Failed to reconnect ... after 30
    seconds", a traceback of a cancelled task). The CLI says what happened in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return not str(record.msg).startswith("Failed to reconnect to scheduler")


def _quiet_lost_scheduler() -> None:
    logging.getLogger("distributed.client").addFilter(_DropLostSchedulerNoise())


# -- status ----------------------------------------------------------------------------

def _add_status(sub) -> None:
    p = sub.add_parser("status", help="show the fleet table of a running cluster",
                       description="Print the per-node fleet table the scheduler's "
                                   "sollol-dask monitor keeps (the same as the /sollol page).")
    p.add_argument("--scheduler", required=True, metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    p.set_defaults(run=_run_status)


def _run_status(args) -> int:
    from distributed import Client

    from .dashboard._status import FleetStatus

    with Client(args.scheduler, timeout="10s") as client:
        print(FleetStatus.from_scheduler(client))
        dashboard = client.dashboard_link
    if dashboard:
        print(f"page: {dashboard.rsplit('/', 1)[0]}/sollol")
    return 0


# -- sim -------------------------------------------------------------------------------

def _add_sim(sub) -> None:
    from .testing.sim import PROFILES

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
                  "die-after", "hang-after", "max-inputs"):
        p.add_argument(f"--{fault}", type=int, default=0, metavar="N", help="fault injection")
    p.set_defaults(run=_run_sim)


def _run_sim(args) -> int:
    from .testing.sim import Faults, SimNode

    changes = {k: v for k, v in (("load_seconds", args.load_seconds), ("slots", args.slots))
               if v is not None}
    faults = Faults(eof_every=args.eof_every, nan_every=args.nan_every,
                    malformed_every=args.malformed_every, truncated_every=args.truncated_every,
                    reset_every=args.reset_every, die_after=args.die_after,
                    hang_after=args.hang_after, max_inputs=args.max_inputs,
                    slowdown=args.slowdown)
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
    p.add_argument("--rows", type=int, default=6000, help="documents to generate")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo(rows=args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
