"""The flags of ``sollol-dask embed``: one per ``Embedder`` / ``embed_parquet`` option a
batch user needs, grouped as ``--help`` shows them, each with its default.

``SETTINGS`` is the one table of Embedder keywords and their flags: the parser is built
from it, the keywords are read back from it, and the error printer uses it to phrase the
library's messages with flags (``max_attempts`` reads ``--max-attempts``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from .._config import DEFAULTS
from . import _types

CONNECT_TIMEOUT = 5.0  # seconds; distributed's own default (30 s) reads as a hang


@dataclasses.dataclass(frozen=True)
class Setting:
    keyword: str  # Embedder(...) keyword
    type: Callable[[str], object]
    metavar: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.keyword.replace("_", "-")

    @property
    def default(self) -> object:
        return DEFAULTS["sollol-dask"][self.keyword.replace("_", "-")]


SETTINGS = {
    "batching and retries": (
        Setting("batch_size", _types.positive_int, "N",
                "texts per request at most; a measured node gets about --batch-seconds of "
                "work per request"),
        Setting("batch_seconds", _types.positive_float, "SECONDS",
                "work a measured node gets per request"),
        Setting("max_batch_chars", _types.positive_int, "N", "characters per request at most"),
        Setting("max_attempts", _types.positive_int, "N",
                "tries of a batch (on other nodes when there are) before the run fails"),
        Setting("wait_for_nodes", _types.positive_float, "SECONDS",
                "how long the run waits with every node down before it fails"),
        Setting("eject_after", _types.positive_int, "N",
                "failures in a row (connection errors, timeouts, 5xx) that take a node out "
                "until it answers a probe"),
        Setting("quarantine_after", _types.positive_int, "N",
                "wrong answers in a row (bad vectors, malformed bodies) that set a node "
                "aside for 5 minutes and more"),
    ),
    "timeouts": (
        Setting("first_timeout", _types.positive_float, "SECONDS",
                "a node's first request, which may include loading the model"),
        Setting("min_timeout", _types.positive_float, "SECONDS",
                "the least a request to a measured node is given"),
        Setting("timeout_factor", _types.positive_float, "X",
                "a request times out after X times the node's expected batch time"),
        Setting("probe_timeout", _types.positive_float, "SECONDS",
                "the fleet check and re-probes of nodes that were taken out"),
        Setting("max_response_bytes", _types.whole_number(1024), "BYTES",
                "largest answer read (default: texts x dimension x 48 bytes + 1 MiB)"),
    ),
    "what each request asks for": (
        Setting("keep_alive", _types.keep_alive, "DURATION",
                "Ollama keep_alive: how long the model stays loaded after a request, e.g. "
                "10m (-1m: always; default: the server's, 5m)"),
        Setting("dimensions", _types.positive_int, "N",
                "ask for shorter vectors (models that support it, e.g. Matryoshka models; "
                "default: the model's full size)"),
        Setting("encoding", str, "{base64,float}",
                "how OpenAI-compatible nodes send vectors (base64 is smaller and faster)"),
        Setting("prefix", str, "TEXT",
                "put before every text, e.g. 'search_document: ' for nomic-embed-text; it "
                "changes the vectors, so it is recorded with the output"),
    ),
}

# API keywords of embed_parquet and their flags (for the error printer), beside SETTINGS'.
RUN_FLAGS = {"column": "--column", "output_column": "--output-column",
             "overwrite": "--overwrite", "rows_per_part": "--rows-per-part",
             "on_invalid": "--on-invalid", "truncate": "--truncate", "options": "--option",
             "length_policy": "--length-policy", "context_length": "--context-length",
             "truncated_column": "--truncated-column", "n_tokens_column": "--n-tokens-column",
             "retry_errors": "--retry-errors"}


def flag_names() -> dict[str, str]:
    """Every API keyword the CLI sets, mapped to its flag."""
    names = {s.keyword: s.flag for group in SETTINGS.values() for s in group}
    return {**names, **RUN_FLAGS}


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="input: a parquet file, a directory of them, or a glob "
                               "('corpus/*.parquet'); s3:// and other fsspec URLs work")
    p.add_argument("dst", metavar="DST", help="output directory (created; must not overlap the input)")
    p.add_argument("--model", required=True,
                   help="embedding model, e.g. nomic-embed-text (required)")

    io = p.add_argument_group("input and output")
    io.add_argument("--column", default="text", help="the text column (default: text)")
    io.add_argument("--output-column", default="embedding",
                    help="the vector column added (default: embedding)")
    mode = io.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                      help="keep the parts a previous run of this command wrote (the default)")
    mode.add_argument("--overwrite", dest="overwrite", action="store_true",
                      help="delete the parts DST's manifest lists and start over")
    io.add_argument("--rows-per-part", type=_types.positive_int, default=4096, metavar="N",
                    help="rows per output part file, one Dask task each (default: 4096)")
    io.add_argument("--on-invalid", choices=("record", "raise", "null"), default="record",
                    help="a row that cannot be embedded for a reason of its own (not text, "
                         "invalid Unicode, too long under --no-truncate, answered wrongly by "
                         "every node): a null vector listed with its reason in DST/_errors "
                         "(record, the default); fail naming the row (raise); a null vector "
                         "for non-text values only (null)")
    io.add_argument("--retry-errors", action="store_true",
                    help="also embed again the rows DST/_errors lists, once their cause is "
                         "fixed; nothing else written is recomputed (default: off)")
    io.add_argument("--no-progress", dest="progress", action="store_false",
                    help="do not show the progress bar")

    nodes = p.add_argument_group(
        "nodes", "Without --node/--openai-node: $SOLLOL_NODES (URLs separated by commas or\n"
                 "spaces), else $OLLAMA_HOST, else http://127.0.0.1:11434.")
    nodes.add_argument("--node", action="append", default=[], metavar="URL",
                       help="an Ollama node (repeat for each); an OpenAI-compatible one is "
                            "written openai+http://host:8080 or http://host:8080/v1")
    nodes.add_argument("--openai-node", action="append", default=[], metavar="URL",
                       help="an OpenAI-compatible node (llama.cpp llama-server, vLLM, TEI, "
                            "Infinity; repeat for each)")
    nodes.add_argument("--header", action="append", default=[], type=_types.header,
                       metavar="'NAME: VALUE'",
                       help="an HTTP header sent to every node (repeat); the value shows in "
                            "shell history and ps: for tokens use --header-env")
    nodes.add_argument("--header-env", action="append", default=[],
                       type=_types.header_from_env, metavar="'NAME=VAR'",
                       help="an HTTP header whose value is read from environment variable "
                            "VAR on every Dask worker; words before VAR are sent before "
                            "its value: 'Authorization=Bearer EMBED_TOKEN' (repeat)")
    tls = nodes.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", metavar="PATH",
                     help="PEM file of CA certificates to verify https:// nodes with (a "
                          "private CA); it must exist on every worker (default: the "
                          "system's CAs)")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify https:// nodes' certificates (warns)")

    cluster = p.add_argument_group("Dask cluster")
    cluster.add_argument("--scheduler", type=_types.scheduler_address, metavar="ADDRESS",
                         help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: "
                              "a LocalCluster on this machine for the run)")
    cluster.add_argument("--connect-timeout", type=_types.positive_float,
                         default=CONNECT_TIMEOUT, metavar="SECONDS",
                         help=f"give up connecting to --scheduler after this long "
                              f"(default: {CONNECT_TIMEOUT:g})")

    for title, settings in SETTINGS.items():
        group = p.add_argument_group(
            title, "The settings below not given as flags come from Dask's config under\n"
                   "sollol-dask (e.g. DASK_SOLLOL_DASK__BATCH_SIZE=64 in the environment);\n"
                   "the defaults shown are the shipped ones."
            if title == "batching and retries" else None)
        for s in settings:
            kwargs = {"choices": ("base64", "float")} if s.keyword == "encoding" else {}
            default = "" if s.default is None else " (default: none)" if s.default == "" \
                else f" (default: {s.default:g})" if isinstance(s.default, float) \
                else f" (default: {s.default})"
            group.add_argument(s.flag, type=s.type, metavar=s.metavar, default=None,
                               help=s.help + default, **kwargs)
        if title == "what each request asks for":
            length = group.add_mutually_exclusive_group()
            length.add_argument("--truncate", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="Ollama truncates a text longer than the model's context "
                                     "(the default); --no-truncate makes it a row error "
                                     "naming its length")
            length.add_argument("--length-policy", choices=("truncate", "reject", "chunk"),
                                default=None,
                                help="truncate: the same as --truncate; reject: as "
                                     "--no-truncate; chunk: embed a long text as overlapping "
                                     "windows that fit the context and average their vectors "
                                     "(default: truncate)")
            group.add_argument("--truncated-column", metavar="NAME", default=None,
                               help="with --length-policy truncate: add a column NAME, true "
                                    "for the rows the server cut (each such row costs a "
                                    "refused request first) (default: no such column)")
            group.add_argument("--n-tokens-column", metavar="NAME", default=None,
                               help="add a column NAME of each row's tokens, counted by a "
                                    "node's tokenizer (llama.cpp; null where none offers one) "
                                    "(default: no such column)")
            group.add_argument("--context-length", type=_types.positive_int, default=None,
                               metavar="TOKENS",
                               help="the context --length-policy chunk plans windows for "
                                    "(default: what the nodes report)")
            group.add_argument("--option", "--options", dest="options", action="append",
                               type=_types.model_option, metavar="KEY=VALUE",
                               help="an Ollama model option, e.g. num_ctx=8192 (repeat), or "
                                    "a JSON object of several")


def embedder_kwargs(args: argparse.Namespace) -> dict:
    """The Embedder keywords the flags give (None: not given, from Dask's config)."""
    kwargs = {s.keyword: getattr(args, s.keyword)
              for group in SETTINGS.values() for s in group}
    options: dict = {}
    for item in args.options or ():
        options.update(item)
    truncate = args.truncate if args.length_policy is None \
        else args.length_policy == "truncate"
    return {**kwargs, "truncate": truncate, "options": options or None,
            "length_policy": args.length_policy, "context_length": args.context_length,
            "verify": False if args.insecure else (args.ca_bundle or None)}


def embed_parquet_kwargs(args: argparse.Namespace) -> dict:
    return {"column": args.column, "output_column": args.output_column,
            "overwrite": args.overwrite, "rows_per_part": args.rows_per_part,
            "progress": args.progress, "on_invalid": args.on_invalid,
            "retry_errors": args.retry_errors, "truncated_column": args.truncated_column,
            "n_tokens_column": args.n_tokens_column}
