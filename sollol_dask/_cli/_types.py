"""Argument types: each turns one command-line value into what the library takes, or
raises ``argparse.ArgumentTypeError`` so a mistake is a usage error (exit 2) naming the
flag, before any node or cluster is contacted."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable

_GO_DURATION = re.compile(r"-?(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
                          r"((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in its own messages
    return parse


positive_int = whole_number(1)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text}")
    return value


def keep_alive(text: str) -> str:
    """An Ollama ``keep_alive`` duration: ``10m``, ``1h30m``, ``-1m`` (stay loaded), ``0``."""
    if text == "0" or _GO_DURATION.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected a duration such as 10m, 1h or 30s (-1m keeps the model loaded, 0 unloads "
        f"it at once), not {text!r}")


def model_option(text: str) -> dict:
    """``KEY=VALUE`` (VALUE read as JSON if it is JSON: ``num_ctx=8192`` is a number) or
    a JSON object of several."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError("expected a JSON object such as '{\"num_ctx\": 8192}'")
        return value
    key, eq, raw = stripped.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (e.g. num_ctx=8192) or a JSON object, not {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # plain text: stop=END
    return {key.strip(): value}


def header(text: str) -> tuple[str, str]:
    """``'Name: value'``. Never echoes the text: it may hold a token."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise argparse.ArgumentTypeError("takes 'Name: value' (a colon after the name)")
    return name.strip(), value.strip()


def header_from_env(text: str) -> tuple[str, str, str]:
    """``NAME=VAR`` or ``NAME=PREFIX VAR``: (header, prefix, variable).

    ``Authorization=Bearer EMBED_TOKEN`` sends ``Authorization: Bearer <$EMBED_TOKEN>``:
    the last word is the variable's name, everything before it is sent as written."""
    name, eq, rest = text.partition("=")
    prefix, _, var = rest.rstrip().rpartition(" ")
    if not eq or not name.strip() or not _ENV_NAME.fullmatch(var):
        raise argparse.ArgumentTypeError(
            f"takes NAME=VARIABLE or NAME=PREFIX VARIABLE (e.g. 'Authorization=Bearer "
            f"EMBED_TOKEN'), not {text!r}")
    return name.strip(), prefix.lstrip() + " " if prefix.strip() else "", var


def scheduler_address(text: str) -> str:
    """A Dask scheduler address distributed can dial: ``tcp://host:8786``, ``host:8786``,
    ``tls://...``. Checked here so a typo is a usage error, not a 30 s wait."""
    from distributed.comm.addressing import get_address_host_port

    try:
        get_address_host_port(text.strip())
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a scheduler address ({exc}); write it as tcp://host:8786") \
            from None
    return text.strip()
