"""The command line's own surface, in-process: help, flags, usage errors, exit codes and
the one-line error (integration runs against nodes are in tests/reliability/test_cli.py)."""

from __future__ import annotations

import inspect

import pytest

import sollol_dask as sd
from sollol_dask import cli
from sollol_dask._cli._embed_args import embedder_kwargs, flag_names
from sollol_dask._cli._errors import for_cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse: --help, usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def embed_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["embed"]


def test_top_level_help_is_user_documentation(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: sollol-dask [-h] [--version] [-v] COMMAND ...\n\n"
                          "Embed a parquet corpus on a fleet of embedding servers")
    for shown in ("embed        embed a parquet corpus into parquet with an embedding column",
                  "sollol-dask embed corpus/ out/ --model nomic-embed-text",
                  "nodes: --node and --openai-node, else $SOLLOL_NODES",
                  "openai+http://host:8080 or http://host:8080/v1 is an OpenAI-compatible",
                  "exit codes:\n  0    done\n  1    the run failed",
                  "  2    bad arguments or input to fix", "  130  interrupted (Ctrl-C)"):
        assert shown in out
    assert "Thin:" not in out  # not the module's developer docstring


FLAGS_WITHOUT_DEFAULT = {"-h", "-v", "--model", "--overwrite", "--no-progress", "--node",
                         "--openai-node", "--header", "--header-env", "--insecure", "--option"}


def test_every_embedder_option_has_a_flag_with_help_and_default(capsys):
    flags = {opt for action in embed_parser()._actions for opt in action.option_strings}
    keywords = set(inspect.signature(sd.Embedder.__init__).parameters) - {"self", "nodes"}
    spelled = {"verify": "--ca-bundle", "options": "--option", "discovery": "--discover"}
    missing = {k for k in keywords if spelled.get(k, "--" + k.replace("_", "-")) not in flags}
    assert not missing
    for action in embed_parser()._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
        if action.option_strings and action.option_strings[0] not in FLAGS_WITHOUT_DEFAULT:
            assert "default" in action.help, f"{action.option_strings} does not say its default"
    code, out, _ = run(capsys, "embed", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for shown in ("--batch-size N texts per request at most; a measured node gets about "
                  "--batch-seconds of work per request (default: 512)",
                  "--wait-for-nodes SECONDS how long the run waits with every node down "
                  "before it fails (default: 60)",
                  "--max-attempts N tries of a batch", "--truncate, --no-truncate",
                  "--keep-alive DURATION", "--dimensions N", "--encoding {base64,float}",
                  "--option KEY=VALUE, --options KEY=VALUE", "--connect-timeout SECONDS",
                  "'Authorization=Bearer EMBED_TOKEN'", "exit codes: 0 done"):
        assert shown in flat


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--rows-per-part", "0", "argument --rows-per-part: must be at least 1, not 0"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1, not 0"),
    ("--batch-size", "ten", "argument --batch-size: expected a whole number, not 'ten'"),
    ("--wait-for-nodes", "-1", "argument --wait-for-nodes: must be a number above 0, not -1"),
    ("--max-response-bytes", "100", "argument --max-response-bytes: must be at least 1024, "
                                    "not 100"),
    ("--keep-alive", "ten", "argument --keep-alive: expected a duration such as 10m, 1h or "
                            "30s (-1m keeps the model loaded, 0 unloads it at once), not 'ten'"),
    ("--option", "num_ctx", "argument --option/--options: expected KEY=VALUE (e.g. "
                            "num_ctx=8192) or a JSON object, not 'num_ctx'"),
    ("--scheduler", "htp://host:8786", "argument --scheduler: 'htp://host:8786' is not a "
                                       "scheduler address (unknown address scheme 'htp'"),
])
def test_bad_flag_values_are_usage_errors_before_any_work(capsys, tmp_path, flag, value,
                                                           message):
    code, _, err = run(capsys, "embed", str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                       "--model", "m", "--node", "http://127.0.0.1:9", flag, value)
    assert code == 2
    assert err.startswith("usage: sollol-dask embed SRC DST --model MODEL [--node URL ...] "
                          "[options]\n")
    assert err.splitlines()[-1].startswith(f"sollol-dask embed: error: {message}")


def test_a_header_mistake_never_echoes_the_value(capsys, tmp_path):
    code, _, err = run(capsys, "embed", "in.parquet", str(tmp_path), "--model", "m",
                       "--header", "X-Api-Key s3cret-value")
    assert code == 2 and "s3cret" not in err
    assert err.endswith("error: argument --header: takes 'Name: value' (a colon after the "
                        "name)\n")


def test_flags_become_the_embedder_settings():
    args = embed_parser().parse_args([
        "in", "out", "--model", "m", "--batch-size", "7", "--wait-for-nodes", "2.5",
        "--max-attempts", "9", "--eject-after", "4", "--quarantine-after", "5",
        "--first-timeout", "30", "--keep-alive", "10m", "--dimensions", "256",
        "--encoding", "float", "--no-truncate", "--option", "num_ctx=8192",
        "--option", '{"temperature": 0, "stop": ["END"]}', "--option", "mirostat=off",
        "--insecure"])
    settings = sd.Embedder(["http://127.0.0.1:9"], model="m", **embedder_kwargs(args)).settings
    assert (settings.batch_size, settings.wait_for_nodes, settings.max_attempts,
            settings.eject_after, settings.quarantine_after, settings.first_timeout,
            settings.verify) == (7, 2.5, 9, 4, 5, 30.0, False)
    assert settings.opts == sd.EmbedOptions(
        model="m", truncate=False, keep_alive="10m", dimensions=256, encoding="float",
        options={"num_ctx": 8192, "temperature": 0, "stop": ["END"], "mirostat": "off"})
    # flags not given leave the settings to Dask's config
    defaults = embed_parser().parse_args(["in", "out", "--model", "m"])
    assert sd.Embedder(["http://127.0.0.1:9"], model="m",
                       **embedder_kwargs(defaults)).settings.batch_size == 512


def test_header_env_with_a_prefix_reads_the_token_on_the_workers():
    args = embed_parser().parse_args(
        ["in", "out", "--model", "m", "--node", "https://proxy.internal",
         "--header-env", "Authorization=Bearer EMBED_TOKEN", "--header-env", "X-Key=KEY_VAR"])
    (node,) = cli._nodes(args)
    assert node.headers == {"Authorization": sd.FromEnv("EMBED_TOKEN", prefix="Bearer "),
                            "X-Key": sd.FromEnv("KEY_VAR")}


@pytest.mark.parametrize(("api", "cli_text"), [
    ("row 3: value is int (3), not text: convert the column to strings, or pass "
     "on_invalid='null' to embed it as null",
     "row 3: value is int (3), not text: convert the column to strings, or pass "
     "--on-invalid null to embed it as null"),
    ("out holds output of another run: pass overwrite=True (--overwrite) to start over",
     "out holds output of another run: pass --overwrite to start over"),
    ("pass --column / column= with the text column's name",
     "pass --column with the text column's name"),
    ("(Ollama nodes truncate by themselves unless truncate=False; OpenAI-compatible",
     "(Ollama nodes truncate by themselves unless --no-truncate; OpenAI-compatible"),
    ("last error: timeout. Check the nodes, or raise max_attempts",
     "last error: timeout. Check the nodes, or raise --max-attempts"),
    ("verify='/etc/ca.pem': no such CA bundle file", "--ca-bundle /etc/ca.pem: no such CA "
                                                      "bundle file"),
    ("Start or fix a node and run again (embed_parquet resumes where it stopped)",
     "Start or fix a node and run again (rerunning the same command resumes where it "
     "stopped)"),
    ("node http://batch_size:1 failed", "node http://batch_size:1 failed"),
])
def test_library_messages_read_in_flags(api, cli_text):
    assert for_cli(api, flag_names()) == cli_text


def test_a_wrong_path_is_one_line_exit_2_and_v_adds_the_traceback(capsys, tmp_path):
    missing = tmp_path / "nope.parquet"
    args = ("embed", str(missing), str(tmp_path / "out"), "--model", "m",
            "--node", "http://127.0.0.1:9")
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    assert err == f"sollol-dask: error: input '{missing}' does not exist\n"
    code, _, err = run(capsys, *args, "-v")  # -v after the command, where users put it
    assert code == 2 and err.startswith("Traceback (most recent call last):")
    assert err.endswith(f"sollol-dask: error: input '{missing}' does not exist\n")


def test_an_unexpected_error_is_still_one_line_last(capsys, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody planned for\nwith a second line")

    monkeypatch.setattr(sd.Embedder, "embed_parquet", broken)
    code, _, err = run(capsys, "embed", str(tmp_path), str(tmp_path / "out"), "--model", "m",
                       "--node", "http://127.0.0.1:9")
    assert code == 1
    assert err == ("sollol-dask: error: RuntimeError: something nobody planned for\n"
                   "  with a second line\n  (run again with -v to see where it happened)\n")


def test_sim_flags_take_what_the_sims_in_tests_and_benchmarks_pass(capsys):
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    args = sub.choices["sim"].parse_args(["--load-seconds", "0", "--port", "0",
                                          "--dimension", "16", "--die-after", "0"])
    assert (args.load_seconds, args.port, args.dimension, args.die_after) == (0.0, 0, 16, 0)
    code, _, err = run(capsys, "sim", "--port", "70000")
    assert code == 2 and err.endswith("error: argument --port: a port is 0-65535, not 70000\n")
