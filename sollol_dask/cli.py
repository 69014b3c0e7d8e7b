"""``sollol-dask``: the command line. Thin: every command calls the library; flags, exit
codes and error lines are in ``sollol_dask._cli``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import sys
import warnings

from . import __version__
from ._cli._embed_args import (CONNECT_TIMEOUT, add_embed_arguments, embed_parquet_kwargs,
                               embedder_kwargs, flag_names)
from ._cli._errors import (EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,
                           CommandError, report_error)
from ._cli import _types

DESCRIPTION = """\
Embed a parquet corpus on a fleet of embedding servers (Ollama nodes, llama.cpp
llama-server, any OpenAI-compatible /v1/embeddings), spread over a Dask cluster.
Batches go to whichever node has a free slot, a failed batch is retried on another
node, every vector is checked, and a run that stopped resumes where it left off."""

EPILOG = f"""\
examples:
  sollol-dask embed corpus/ out/ --model nomic-embed-text \\
      --node http://gpu1:11434 --node http://cpu1:11434
  sollol-dask embed corpus/ out/ --model all-MiniLM-L6-v2 --node openai+http://box:8080
  sollol-dask demo        # the whole pipeline on simulated nodes: no server needed
  sollol-dask embed --help

nodes: --node and --openai-node, else $SOLLOL_NODES (URLs separated by commas or
  spaces; openai+http://host:8080 or http://host:8080/v1 is an OpenAI-compatible
  node), else $OLLAMA_HOST, else http://127.0.0.1:11434.

{EXIT_CODES_HELP}"""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _one_line_warnings()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("sollol-dask: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last thing a user reads is one line, whatever failed
        return report_error(exc, verbose=args.verbose, flags=flag_names())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sollol-dask", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"sollol-dask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what the router does; show the traceback of an error")
    # -v also after the command (`sollol-dask embed ... -v`), where users put it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log what the router does; show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_embed, _add_status, _add_discover, _add_sim, _add_demo):
        add(sub, common)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (examples, tables); flag help wrapped."""


def _say(text: object) -> None:
    """Print to stdout; a reader that went away (``| head``) does not fail the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Later writes, and the interpreter's flush at exit, go nowhere instead of failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _scheduler_client(address: str | None, timeout: float):
    """A client of the scheduler at ``address`` (None: none), connected within
    ``timeout`` seconds or a one-line error naming the address and what to check."""
    if address is None:
        yield None
        return
    from distributed import Client

    try:
        asyncio.run(asyncio.wait_for(_scheduler_identity(address, timeout), timeout))
        client = Client(address, timeout=timeout)
    except Exception as exc:  # refused, unreachable, timed out, not a Dask scheduler
        raise CommandError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: check the "
            "address and port, that the scheduler is running and that this machine can reach "
            "it (--connect-timeout SECONDS waits longer)") from exc
    with client:
        yield client


async def _scheduler_identity(address: str, timeout: float) -> dict:
    """Ask the scheduler who it is. Bounded as a whole by the caller: distributed's own
    connect timeout does not cover a server that accepts the connection and then never
    answers as a scheduler (an HTTP port, say: a minute's wait)."""
    from distributed.core import rpc
    from distributed.security import Security

    conn = rpc(address, timeout=timeout,
               connection_args=Security().get_connection_args("client"))
    try:
        return await conn.identity()
    finally:
        await conn.close_rpc()


def _one_line_warnings() -> None:
    """Our warnings (a node left out, TLS off) as one line each, like our errors; the
    source line Python would add says nothing to a command-line user."""
    from ._exceptions import FleetWarning, InsecureTLSWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (FleetWarning, InsecureTLSWarning)):
            print(f"sollol-dask: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# -- embed -----------------------------------------------------------------------------

def _add_embed(sub, common) -> None:
    p = sub.add_parser(
        "embed", parents=[common], formatter_class=_Formatter,
        usage="sollol-dask embed SRC DST --model MODEL [--node URL ...] [options]",
        help="embed a parquet corpus into parquet with an embedding column",
        description="Embed the text column of a parquet corpus (a file, a directory or a "
                    "glob) on a fleet of\nnodes; writes part files and a manifest to DST. "
                    "Rerunning the same command resumes:\nfinished parts are skipped.",
        epilog="example:\n  sollol-dask embed corpus/ out/ --model nomic-embed-text "
               "--node http://gpu1:11434 \\\n      --node http://cpu1:11434 --scheduler "
               "tcp://10.0.0.5:8786\n\n" + EXIT_CODES_HELP)
    add_embed_arguments(p)
    _add_discover_flags(p, embed=True)
    p.set_defaults(run=_run_embed)


def _run_embed(args) -> int:
    from ._embedder import Embedder

    nodes = _nodes(args)
    _quiet_lost_scheduler()
    rediscover = args.rediscover if args.discover else None
    with Embedder(nodes, model=args.model, rediscover=rediscover,
                  **embedder_kwargs(args)) as emb, \
            _scheduler_client(args.scheduler, args.connect_timeout) as client:
        report = emb.embed_parquet(args.src, args.dst, client=client,
                                   **embed_parquet_kwargs(args))
    _say(report)
    return EXIT_OK


def _nodes(args) -> list | None:
    """The nodes the flags name (None: from the environment), each with the headers."""
    from ._node import Node, resolve_nodes
    from ._secrets import FromEnv

    headers: dict = dict(args.header)
    headers.update({name: FromEnv(var, prefix=prefix) for name, prefix, var in args.header_env})
    nodes = [*args.node, *(Node(url, api="openai") for url in args.openai_node)] or None
    if args.discover:
        if headers or nodes:
            from ._exceptions import ConfigurationError
            raise ConfigurationError(
                "--discover finds the nodes and sends them no headers: drop --node, "
                "--openai-node, --header and --header-env, or drop --discover")
        nodes = _discovery_spec(args)
    if headers:
        nodes = [dataclasses.replace(n, headers={**(n.headers or {}), **headers})
                 for n in resolve_nodes(nodes)]
    return nodes


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


# -- discover --------------------------------------------------------------------------

def _add_discover(sub, common) -> None:
    p = sub.add_parser(
        "discover", parents=[common], formatter_class=_Formatter, help="find embedding servers and print what each serves",
        description="Ask the addresses you allow (SOLLOL_NODES/OLLAMA_HOST, this host's "
                    "well-known ports, and only if given: --cidr ranges, --host names, "
                    "each Dask worker's host with --scheduler) and print a table: URL, "
                    "server kind and version, models with digests, loaded or not, VRAM, "
                    "slots. With --model, says which servers a fleet would use and why "
                    "the others are left out.")
    p.add_argument("--model", help="keep only servers that serve this model")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler: also probe each worker's host, from that worker")
    _add_discover_flags(p, embed=False)
    p.set_defaults(run=_run_discover)


def _add_discover_flags(p, *, embed: bool) -> None:
    """Where discovery may look; shared by `discover` and `embed --discover`."""
    if embed:
        p.add_argument("--discover", action="store_true",
                       help="find the nodes instead of listing them (sources below); nodes "
                            "switched on during the run join it (default: off)")
        p.add_argument("--rediscover", type=float, default=30.0, metavar="SECONDS",
                       help="with --discover: look again this often (0: never; default 30)")
    p.add_argument("--cidr", action="append", default=[], metavar="RANGE",
                   help="scan this range too, e.g. 192.168.1.0/24 (repeat; default: none)")
    p.add_argument("--host", dest="hosts", action="append", default=[], metavar="HOST",
                   help="ask this host too: name (every DNS address), IP or host:port (repeat; "
                        "default: none)")
    p.add_argument("--port", dest="ports", action="append", type=int, default=[],
                   metavar="PORT", help="ports to ask (repeat; default 11434 and 8080)")
    p.add_argument("--no-env", dest="env", action="store_false",
                   help="ignore SOLLOL_NODES and OLLAMA_HOST (default: read them)")
    p.add_argument("--no-local", dest="local", action="store_false",
                   help="do not ask this host's well-known ports (default: ask them)")
    p.add_argument("--digest", help="keep only this build of the model, a digest prefix (default: the "
                        "digest most servers have)")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds an address gets to answer (default 3)")


def _discovery_spec(args):
    from .discovery import WELL_KNOWN_PORTS, DiscoverySpec

    return DiscoverySpec(env=args.env, local=args.local, ports=tuple(args.ports) or
                         WELL_KNOWN_PORTS, cidr=tuple(args.cidr), hosts=tuple(args.hosts),
                         digest=args.digest, timeout=args.timeout,
                         connect_timeout=min(1.0, args.timeout))


def _run_discover(args) -> int:
    from .cluster._discover import discover

    spec = _discovery_spec(args)
    if args.scheduler:
        from distributed import Client

        with Client(args.scheduler, timeout="10s") as client:
            found = discover(args.model, spec=spec, client=client)
    else:
        found = discover(args.model, spec=dataclasses.replace(spec, workers=False))
    print(found)
    return 0 if (found.kept if args.model else found.servers) else 3


# -- status ----------------------------------------------------------------------------

def _add_status(sub, common) -> None:
    p = sub.add_parser("status", parents=[common], formatter_class=_Formatter,
                       help="show the fleet table of a running cluster",
                       description="Print the per-node fleet table the scheduler's "
                                   "sollol-dask monitor keeps (the same as the /sollol page).",
                       epilog=EXIT_CODES_HELP)
    p.add_argument("--scheduler", required=True, type=_types.scheduler_address,
                   metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--connect-timeout", type=_types.positive_float, default=CONNECT_TIMEOUT,
                   metavar="SECONDS",
                   help=f"give up connecting after this long (default: {CONNECT_TIMEOUT:g})")
    p.add_argument("--all", action="store_true", dest="show_all",
                   help="list every node (by default a fleet of more than 20 nodes shows "
                        "its failing and its slowest nodes)")
    p.set_defaults(run=_run_status)


def _run_status(args) -> int:
    from .dashboard._status import FleetStatus

    with _scheduler_client(args.scheduler, args.connect_timeout) as client:
        table = FleetStatus.from_scheduler(client, show_all=args.show_all)
        dashboard = client.dashboard_link
    _say(table)
    if dashboard:
        _say(f"page: {dashboard.rsplit('/', 1)[0]}/sollol")
    return EXIT_OK


# -- sim -------------------------------------------------------------------------------

_FAULTS = {
    "eof-every": "answer every Nth embed request with Ollama's runner EOF error (400)",
    "nan-every": "answer every Nth embed request with Ollama's NaN error",
    "malformed-every": "answer every Nth embed request with a body that is not JSON",
    "truncated-every": "cut every Nth answer short",
    "reset-every": "reset the connection on every Nth request",
    "die-after": "close the port after N embed requests",
    "hang-after": "stop answering after N embed requests",
    "max-inputs": "refuse requests of more than N texts with a 422, as TEI does",
}


def _add_sim(sub, common) -> None:
    from .testing.sim import PROFILES

    p = sub.add_parser("sim", parents=[common], formatter_class=_Formatter,
                       help="serve a simulated Ollama node (for tests and demos)",
                       description="Serve a simulated Ollama-compatible embedding node "
                                   "until Ctrl-C.", epilog=EXIT_CODES_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=11434,
                   help="port (default: 11434; 0 picks a free one)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="gpu",
                   help="speed profile: gpu ~117/s, cpu ~15/s, llamacpp 8 slots, instant "
                        "(default: gpu)")
    p.add_argument("--model", default="nomic-embed-text",
                   help="the model it serves (default: nomic-embed-text)")
    p.add_argument("--dimension", type=_types.positive_int, default=768,
                   help="vector length (default: 768)")
    p.add_argument("--load-seconds", type=_types.non_negative_float,
                   help="cold model load time (default: the profile's)")
    p.add_argument("--slots", type=_types.positive_int,
                   help="parallel slots, as llama.cpp's -np (default: the profile's)")
    p.add_argument("--slowdown", type=_types.positive_float, default=1.0,
                   help="multiply model time (default: 1)")
    p.add_argument("--digest-variant", default="",
                   help="report another model digest (a node that must be left out)")
    faults = p.add_argument_group("fault injection (0: never, the default)")
    for fault, text in _FAULTS.items():
        faults.add_argument(f"--{fault}", type=_types.whole_number(0), default=0,
                            metavar="N", help=text)
    p.set_defaults(run=_run_sim)


def _port(text: str) -> int:
    port = _types.whole_number(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {port}")
    return port


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
        try:
            await node.serve()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {args.port} on {args.host} is in use (another sim or Ollama?): "
                    "choose another with --port, or --port 0 for a free one",
                    exit_code=EXIT_USAGE) from exc
            raise CommandError(f"cannot listen on {args.host}:{args.port}: "
                               f"{exc.strerror or exc}", exit_code=EXIT_USAGE) from exc
        _say(f"sollol-dask sim ({node.profile.name}, {args.model}) listening on {node.url}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(serve())
    return EXIT_OK


# -- demo ------------------------------------------------------------------------------

def _add_demo(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], formatter_class=_Formatter,
                       help="embed a generated corpus on simulated nodes",
                       description="Start simulated nodes of mixed speed on 127.0.0.1 and "
                                   "embed a generated corpus with them.",
                       epilog=EXIT_CODES_HELP)
    p.add_argument("--rows", type=_types.positive_int, default=6000,
                   help="documents to generate (default: 6000)")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo(rows=args.rows)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
