"""How the command line ends: one exit code per kind of outcome, and one line saying what
went wrong, phrased with the CLI's flags rather than the Python API's keywords.

Whatever fails, the last thing a user reads is ``sollol-dask: error: ...`` (plus short
hint lines); ``-v`` prints the traceback above it.
"""

from __future__ import annotations

import re
import sys
import traceback

from .._exceptions import ConfigurationError, InputError, SollolError

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed: nodes, the cluster, the output directory, a bug
EXIT_USAGE = 2  # bad arguments or input the user must fix (argparse uses 2 as well)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

EXIT_CODES_HELP = """\
exit codes:
  0    done
  1    the run failed: no node could embed, the Dask cluster was lost or could not be
       reached, the output directory cannot be used (finished parts are kept: rerun)
  2    bad arguments or input to fix: a usage error, a wrong path, a missing column, an
       invalid node URL, a non-positive number, an input that is not parquet, a row that
       is not text
  130  interrupted (Ctrl-C)"""

MAX_HINT_LINES = 4


class CommandError(SollolError):
    """A failure the CLI itself detects (a scheduler it cannot reach, a port in use);
    ``exit_code`` says which kind it is."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, CommandError):
        return exc.exit_code
    if isinstance(exc, (ConfigurationError, InputError)):
        return EXIT_USAGE
    return EXIT_FAILED


def report_error(exc: BaseException, *, verbose: bool, flags: dict[str, str]) -> int:
    """Print ``exc`` for a CLI user (the traceback first with ``verbose``); its exit code.

    ``flags`` maps API keywords (``on_invalid``) to the flags that set them
    (``--on-invalid``), so a library message reads in the user's terms."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    lines = error_lines(exc, flags)
    if not verbose and not isinstance(exc, SollolError):
        lines.append("(run again with -v to see where it happened)")
    _write_stderr("sollol-dask: error: " + "\n  ".join(lines) + "\n")
    return exit_code_for(exc)


def error_lines(exc: BaseException, flags: dict[str, str]) -> list[str]:
    """The message's first line, then its other lines and notes as hints (a few)."""
    text = str(exc).strip()
    if not isinstance(exc, SollolError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines += [str(note).strip() for note in getattr(exc, "__notes__", ()) if str(note).strip()]
    lines = [for_cli(line, flags) for line in lines] or [type(exc).__name__]
    if len(lines) > 1 + MAX_HINT_LINES:
        lines = lines[:1 + MAX_HINT_LINES] + ["..."]
    return lines


# Phrases of library messages that only make sense to a Python caller.
_PHRASES = (
    (re.compile(r"\bembed_parquet resumes where it stopped"),
     "rerunning the same command resumes where it stopped"),
    (re.compile(r"\bverify=False\b"), "--insecure"),
    (re.compile(r"\bverify=(['\"])(.*?)\1"), r"--ca-bundle \2"),
)


def for_cli(message: str, flags: dict[str, str]) -> str:
    """``message`` with API keywords as CLI flags: ``on_invalid='null'`` reads
    ``--on-invalid null``, ``overwrite=True (--overwrite)`` reads ``--overwrite``,
    ``truncate=False`` ``--no-truncate``, a bare ``max_attempts`` ``--max-attempts``."""
    for pattern, replacement in _PHRASES:
        message = pattern.sub(replacement, message)
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    if not names:
        return message

    def keyword(match: re.Match) -> str:
        flag, value = flags[match["name"]], match["value"]
        if value == "True":
            return flag
        if value == "False":
            return "--no-" + flag[2:]
        return f"{flag} {value.strip(chr(39) + chr(34))}".rstrip()

    message = re.sub(rf"(?<![\w./:-])(?P<name>{names})=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;:)]*)",
                     keyword, message)
    snake = "|".join(re.escape(n) for n in flags if "_" in n)
    if snake:
        message = re.sub(rf"(?<![\w./:-])({snake})(?![\w:/.-])", lambda m: flags[m[1]], message)
    # "--overwrite (--overwrite)" and "--column / --column": one is enough
    return re.sub(r"(--[\w-]+(?: \S+)?) (?:\(\1\)|/ \1)", r"\1", message)


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # stderr closed: nobody to tell
        pass
