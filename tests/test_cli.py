"""The CLI's contract: Ctrl-C at any moment, JSON on every outcome, usage errors as such,
-q/-v anywhere, help in pipeline order with examples that hold."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from httpserver import Behaviour, Server

from danbert_convert.cli import COMMANDS, cli
from danbert_convert.output.manifest import MANIFEST_NAME
from danbert_convert.stages.fetch import fetch

pytestmark = pytest.mark.usefixtures("local_network")

DANBERT = [sys.executable, "-m", "danbert_convert"]
SHA = "ab" * 32


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def json_error(stdout: str) -> dict:
    """stdout must be exactly one JSON object."""
    return json.loads(stdout)


def wait_for_our_code(proc: subprocess.Popen) -> None:
    """Wait until the child runs our code: it has loaded an extension module (json's, first).

    Before that the interpreter itself is starting up (site, encodings), where no Python
    program can catch a SIGINT. Without /proc, a fixed 0.1 s stands in.
    """
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        time.sleep(0.1)
        return
    deadline = time.monotonic() + 30
    while not any(s in maps.read_text() for s in ("lib-dynload", "site-packages")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_at_any_moment_is_130_and_one_line(full_release, tmp_path):
    """A real SIGINT to a real `danbert convert`, from its first imports to its last write."""
    outcomes = set()
    # None: the signal comes after the run ended (however long a loaded machine takes).
    for i, delay in enumerate([0, 0.03, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2, None]):
        out = tmp_path / f"out{i}"
        proc = subprocess.Popen(
            [*DANBERT, "convert", str(full_release), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_our_code(proc)
        if delay is None:
            proc.wait(timeout=120)
        else:
            time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        outcomes.add(proc.returncode)
        for bad in ("Traceback", "Aborted!", "KeyboardInterrupt", "Exception ignored"):
            assert bad not in stderr, (delay, stderr)
        if proc.returncode == 130:
            assert stderr.splitlines()[-1] == "interrupted", (delay, stderr)
            assert stdout == ""
            assert not out.exists()
        else:
            assert proc.returncode == 0, (delay, stderr)
            assert (out / MANIFEST_NAME).is_file()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out{i}.")] == []
    assert outcomes == {0, 130}, outcomes  # the signals landed while it ran, and after


def test_json_failures_print_a_json_object(full_release, tmp_path):
    """--json: every failure is {"ok": false, "error", "exit_code"} on stdout; stderr keeps its
    one line."""
    missing = tmp_path / "missing"
    cases = [
        (["inspect", missing, "--json"], 3, f"{missing}.index: checkpoint index not found"),
        (["verify", missing, "--json"], 3, f"{missing}: not a folder"),
        (["fetch", "--from", missing, "--dest", tmp_path / "w", "--json"], 3,
         f"{missing}: no such file or folder"),
        (["fetch", "--json", "--sha256", "xyz"], 2,
         "Invalid value for '--sha256': 'xyz' is not a SHA-256 hex digest (64 hex digits)"),
        (["fetch", "--url", "http://127.0.0.1:9/r.zip", "--from", full_release, "--json"], 2,
         "--url and --from exclude each other: download, or use a local copy"),
        (["inspect", "--json", full_release, "--no-such-option"], 2, None),
    ]  # fmt: skip
    for args, code, message in cases:
        r = run(*args)
        assert r.exit_code == code, (args, r.output)
        got = json_error(r.stdout)
        if message is None:  # click's own wording, which varies between its versions
            message = got["error"]
            assert "No such option" in message and "--no-such-option" in message
        assert got == {"ok": False, "error": message, "exit_code": code}, args
        conforms(got, "failure")
        assert r.stderr.splitlines()[-1] in (f"error: {message}", f"Error: {message}")
        assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_json_success_says_ok(full_release):
    r = run("inspect", full_release, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["ok"] is True and "error" not in doc


def test_verify_json_failure_is_one_document(full_release, tmp_path):
    out = tmp_path / "out"
    assert run("convert", full_release, out).exit_code == 0
    config = out / "config.json"
    config.write_text(config.read_text().replace('"gelu"', '"relu"'))
    r = run("verify", out, "--json")
    assert r.exit_code == 6, r.output
    report = json.loads(r.stdout)  # one document: the report, which carries the error
    conforms(report, "verify")
    assert report["ok"] is False and report["exit_code"] == 6
    assert report["error"] == f"{out}: failed checks: parity"
    assert [c["status"] for c in report["checks"] if c["name"] == "parity"] == ["fail"]
    assert r.stderr.splitlines()[-1] == f"error: {out}: failed checks: parity"


@pytest.mark.parametrize("value", ["xyz", SHA[:-1], SHA + "0", "g" * 64, ""])
@pytest.mark.parametrize("command", ["fetch", "all"])
def test_malformed_sha256_is_a_usage_error(tmp_path, command, value):
    r = run(command, "--sha256", value, "--dest", tmp_path / "w", "--url", "http://127.0.0.1:9/")
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '--sha256': {value!r} is not a SHA-256 hex digest" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "w").exists()


def test_well_formed_sha256_is_normalised(full_release, tmp_path):
    """Upper case and surrounding blanks are fine, as fetch.check_sha256 allows."""
    zip_path = tmp_path / "r.zip"
    from zips import zip_folder

    zip_folder(full_release, zip_path, top="release")
    from danbert_convert._fs import sha256_file

    digest = sha256_file(zip_path)
    r = run("fetch", "--from", zip_path, "--dest", tmp_path / "w", "--sha256", f" {digest.upper()}")
    assert r.exit_code == 0, r.output
    r = run("fetch", "--from", zip_path, "--dest", tmp_path / "w2", "--sha256", SHA, "--json")
    assert r.exit_code == 5, r.output
    assert json_error(r.stdout)["exit_code"] == 5


@pytest.mark.parametrize("command", ["fetch", "all"])
def test_url_with_from_is_refused(full_release, tmp_path, command):
    url = "http://127.0.0.1:9/r.zip"
    r = run(command, "--url", url, "--from", full_release, "--dest", tmp_path / "w")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[-1] == (
        "Error: --url and --from exclude each other: download, or use a local copy"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fetch_api_refuses_urls_with_from_path(full_release, tmp_path):
    with pytest.raises(ValueError, match="urls and from_path exclude each other"):
        fetch(dest=tmp_path / "w", urls=["http://127.0.0.1:9/r.zip"], from_path=full_release)
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_fetch_json_interrupted(tmp_path):
    """Ctrl-C is an outcome too: with --json it is the failure document, exit_code 130."""
    with Server() as server:
        url = server.route("/r.zip", Behaviour(body=b"PK\x03\x04" + bytes(20000),
                                               stall_after=5000, stall_seconds=30))  # fmt: skip
        cmd = [*DANBERT, "fetch", "--url", url, "--dest", str(tmp_path), "--json"]
        env = {**os.environ, "NO_PROXY": "*"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        part = tmp_path / "r.zip.part"
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size == 5000):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert json.loads(out) == {"ok": False, "error": "interrupted", "exit_code": 130}
    assert err.decode().splitlines()[-1] == "interrupted"


HEAVY = ("numpy", "requests", "tqdm", "tokenizers", "torch", "transformers", "tensorflow",
         "danbert_convert.stages.fetch", "danbert_convert.stages.convert",
         "danbert_convert.readers.base", "danbert_convert.stages.verify",
         "danbert_convert.stages.workflow")  # fmt: skip


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models"], ["convert", "--help"]])
def test_commands_that_do_no_work_import_no_stage(args):
    """Start-up stays fast by construction: each command imports its stage when it runs."""
    script = (
        "import sys\n"
        "from danbert_convert.__main__ import main\n"
        f"sys.argv = ['danbert', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# Issue 13, items 7-9.

PIPELINE = ["fetch", "convert", "verify", "all", "inspect", "models"]
SAMPLE = "danish-bert-sample"
HINT = "hint: an unexpected error; rerun with -v to see the traceback"


SCHEMA = json.loads(
    resources.files("danbert_convert").joinpath("data/cli-output.schema.json").read_text()
)


def conforms(doc: dict, kind: str) -> None:
    """`doc` is the document the schema's $defs/`kind` describes (the README's table)."""
    from jsonschema import Draft202012Validator

    schema = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{kind}"}
    Draft202012Validator(schema).validate(doc)
    Draft202012Validator(SCHEMA).validate(doc)  # and the schema of any output


def test_schema_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(SCHEMA)
    assert set(PIPELINE) < set(SCHEMA["$defs"])


def one_document(r, command: str) -> dict:
    """stdout is exactly one JSON object (json.loads refuses anything after it) whose "ok"
    says how the command ended, as the schema describes; a failure carries its error and
    exit code."""
    doc = json.loads(r.stdout)
    conforms(doc, command if r.exit_code == 0 or command == "verify" else "failure")
    assert doc["ok"] is (r.exit_code == 0), r.output
    if r.exit_code:
        assert doc["exit_code"] == r.exit_code and doc["error"], doc
        lines = r.stderr.splitlines()
        assert f"error: {doc['error']}" in lines or lines[-1] == f"Error: {doc['error']}", lines
    return doc


def failure(r, code: int) -> str:
    """The failure document, which holds nothing else; its error."""
    assert r.exit_code == code, r.output
    doc = one_document(r, "failure")
    assert sorted(doc) == ["error", "exit_code", "ok"], doc
    assert "Traceback" not in r.output
    return doc["error"]


def test_fetch_json_success_and_failure(tmp_path):
    r = run("fetch", SAMPLE, "--dest", tmp_path / "w", "--json")
    doc = one_document(r, "fetch")
    assert doc["checkpoint_dir"] == str(tmp_path / "w" / "danish_bert_sample")
    assert (tmp_path / "w" / "danish_bert_sample" / "bert_config.json").is_file()
    with Server() as server:
        url = server.route("/r.zip", Behaviour(status=404))
        r = run("fetch", "--url", url, "--dest", tmp_path / "w2", "--retries", "0", "--json")
    assert failure(r, 5).startswith(f"could not download r.zip: {url} -> HTTP 404")


def test_convert_json_success_and_failure(full_release, tmp_path):
    import tensorflow as tf
    from safetensors import safe_open

    out = tmp_path / "out"
    doc = one_document(run("convert", full_release, out, "--json"), "convert")
    assert doc["out"] == str(out) and doc["architecture"] == "BertForPreTraining"
    assert sorted(doc["files"]) == sorted(p.name for p in out.iterdir())
    with safe_open(out / "model.safetensors", "np") as f:
        keys = list(f.keys())
        assert doc["tensors"] == len(keys)
        assert doc["weight_bytes"] == sum(f.get_tensor(k).nbytes for k in keys)
    # Skipped: exactly the training state TensorFlow lists in the checkpoint.
    names = [n for n, _ in tf.train.list_variables(str(full_release / "bert_model.ckpt"))]
    assert sorted(doc["skipped"]) == sorted(n for n in names if "adam_" in n or n == "global_step")
    # A bad checkpoint: its .index is not a tensor_bundle table.
    bad = tmp_path / "bad"
    shutil.copytree(full_release, bad)
    (bad / "bert_model.ckpt.index").write_bytes(b"not an index" * 10)
    error = failure(run("convert", bad, tmp_path / "out2", "--json"), 3)
    assert "bert_model.ckpt.index" in error
    assert not (tmp_path / "out2").exists()


def test_all_json_success_and_failure(tmp_path):
    out = tmp_path / "model"
    r = run("all", SAMPLE, "--dest", tmp_path / "w", "--out", out, "--json")
    doc = one_document(r, "all")
    assert doc["out"] == str(out) and doc["architecture"] == "BertForPreTraining"
    assert doc["checkpoint_dir"] == str(tmp_path / "w" / "danish_bert_sample")
    assert [s["stage"] for s in doc["stages"]] == ["fetch", "convert", "verify"]
    assert doc["report"]["ok"] is True and doc["report"]["model"] == str(out)
    assert json.loads((out / "danbert-verify.json").read_text())["ok"] is True
    error = failure(run("all", "no-such-model", "--dest", tmp_path / "w3", "--json"), 3)
    assert error.startswith("fetch stage: unknown model 'no-such-model' (known: ")
    # A failing verify stage: the failure document carries the report, whose checks say why.
    r = run("all", SAMPLE, "--dest", tmp_path / "w", "--out", out, "--expect", "zzzz", "--json")
    assert r.exit_code == 6, r.output
    doc = one_document(r, "all")
    assert doc["error"].startswith("verify stage")
    assert {c["name"]: c["status"] for c in doc["report"]["checks"]}["fill-mask"] == "fail"


def test_inspect_json_success_and_failure(full_release, tmp_path):
    doc = one_document(run("inspect", full_release, "--json"), "inspect")
    assert doc["architecture"] == "BertForPreTraining" and doc["variables"]
    error = failure(run("inspect", tmp_path / "missing", "--json"), 3)
    assert error == f"{tmp_path / 'missing'}.index: checkpoint index not found"


def test_verify_json_success(tmp_path):
    """(A failing verify: test_verify_json_failure_is_one_document.)"""
    work = run("fetch", SAMPLE, "--dest", tmp_path / "w").stdout.strip()
    assert run("convert", work, tmp_path / "out").exit_code == 0
    doc = one_document(run("verify", tmp_path / "out", "--json"), "verify")
    assert doc["model"] == str(tmp_path / "out")
    assert {c["name"]: c["status"] for c in doc["checks"]} == {
        "files": "pass", "weights": "pass", "tokenizer": "pass", "parity": "pass",
        "fill-mask": "info",
    }  # fmt: skip


def test_models_json_success_and_failure():
    doc = one_document(run("models", "--json"), "models")
    assert sorted(doc) == ["models", "ok"]
    assert [m["name"] for m in doc["models"] if m["default"]] == ["danish-bert-uncased-v2"]
    # `models` takes no name: an unknown one is a usage error.
    assert "no-such-model" in failure(run("models", "no-such-model", "--json"), 2)


def test_models_show_the_family():
    doc = one_document(run("models", "--json"), "models")
    families = {m["name"]: m["family"] for m in doc["models"]}
    assert families["danish-bert-uncased-v2"] == families["bert-base-cased"] == "bert"
    assert families["electra-small"] == families["aelaectra-danish-cased"] == "electra"
    header, *rows = run("models").stdout.splitlines()[:-1]
    column = header.split().index("FAMILY")
    shown = {row[2:].split()[0]: row[2:].split()[column] for row in rows}  # after the mark
    assert shown == families


def test_usage_errors_before_the_subcommand_are_json_too():
    for args in (["--no-such-option", "models", "--json"], ["no-such-command", "--json"]):
        assert "no-such" in failure(run(*args), 2)


def test_quiet_after_the_subcommand_too(tmp_path):
    r = run("fetch", SAMPLE, "--dest", tmp_path / "a")
    assert r.exit_code == 0 and "copied from the package's own data" in r.stderr
    for i, args in enumerate([["-q", "fetch", SAMPLE], ["fetch", SAMPLE, "-q"],
                              ["fetch", "--quiet", SAMPLE]]):  # fmt: skip
        dest = tmp_path / f"q{i}"
        r = run(*args, "--dest", dest)
        assert (r.exit_code, r.stdout, r.stderr) == (0, f"{dest / 'danish_bert_sample'}\n", "")


def test_verbose_after_the_subcommand_too(tmp_path):
    """-v shows the traceback of an expected error too (at debug level), before its line."""
    missing = tmp_path / "missing"
    line = f"error: {missing}.index: checkpoint index not found"
    r = run("inspect", missing)
    assert (r.exit_code, r.stderr) == (3, line + "\n")
    for args in (["-v", "inspect", missing], ["inspect", missing, "-v"]):
        r = run(*args)
        assert r.exit_code == 3 and r.stderr.splitlines()[-1] == line
        assert "Traceback (most recent call last):" in r.stderr
        assert "danbert_convert.errors.InputError: " in r.stderr


def group_copy() -> click.Group:
    """A copy of the group, for test-only commands."""
    group = copy.copy(cli)
    group.commands = dict(cli.commands)
    return group


def test_verbose_counts_across_both_places():
    """A test-only command shows the count the commands see."""
    group = group_copy()

    @group.command("probe")
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        click.echo(f"{ctx.find_root().obj['verbose']} {ctx.find_root().obj['quiet']}")

    cases = {("probe",): "0 False", ("-v", "probe"): "1 False", ("probe", "-v"): "1 False",
             ("-v", "probe", "-v"): "2 False", ("-vv", "probe", "--verbose"): "3 False",
             ("probe", "-vq"): "1 True", ("-q", "probe", "-v"): "1 True"}  # fmt: skip
    for args, expected in cases.items():
        r = CliRunner().invoke(group, list(args))
        assert (r.exit_code, r.stdout) == (0, expected + "\n"), args


def test_with_json_nothing_else_reaches_stdout():
    """Whatever a command, or a library under it, prints goes to stderr with --json: a
    test-only command prints three ways, then gives its document."""
    from danbert_convert.cli import _echo_json

    group = group_copy()

    @group.command("chatty")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def chatty(ctx: click.Context, as_json: bool) -> None:
        print("print")
        click.echo("click.echo")
        sys.stdout.write("sys.stdout\n")
        if as_json:
            _echo_json(ctx, {"ok": True})

    r = CliRunner().invoke(group, ["chatty", "--json"])
    assert (r.exit_code, json.loads(r.stdout)) == (0, {"ok": True})
    assert r.stderr == "print\nclick.echo\nsys.stdout\n"
    r = CliRunner().invoke(group, ["chatty"])
    assert (r.stdout, r.stderr) == ("print\nclick.echo\nsys.stdout\n", "")


def crashing_group() -> click.Group:
    """The group with a test-only command that fails as a bug would (real input that crashes
    a command is a bug to fix, so the tests cannot rely on one)."""
    group = group_copy()

    @group.command("crash")
    @click.option("--json", "as_json", is_flag=True)
    def crash(as_json: bool) -> None:
        raise TypeError("'list' object is not a mapping")

    return group


def test_unexpected_error_is_one_line_and_a_hint():
    group = crashing_group()

    def run(*args: str):
        return CliRunner().invoke(group, list(args))

    r = run("crash")
    assert r.exit_code == 1 and r.stdout == ""
    error, hint = r.stderr.splitlines()
    assert error == "error: TypeError: 'list' object is not a mapping" and hint == HINT
    assert failure(run("crash", "--json"), 1) == error.removeprefix("error: ")
    for args in (["-v", "crash"], ["crash", "-v"]):
        r = run(*args)
        assert r.exit_code == 1 and r.stdout == ""
        assert r.stderr.startswith("Traceback (most recent call last):\n")
        assert r.stderr.splitlines()[-1] == error and HINT not in r.stderr


def test_inspect_reports_a_config_that_is_no_object(full_release, tmp_path):
    """It used to crash with a TypeError; now it is named, as convert names it."""
    folder = tmp_path / "broken"
    shutil.copytree(full_release, folder)
    (folder / "bert_config.json").write_text("[]")
    r = run("inspect", folder, "--json")
    assert r.exit_code == 0, r.stderr
    assert (
        json.loads(r.stdout)["problem"] == f"{folder / 'bert_config.json'}: expected a JSON object"
    )


def test_unexpected_error_outside_the_commands():
    """__main__'s last resort, for a failure before the CLI exists (here: a damaged install,
    its cli module empty): one line, the hint, the JSON document; the traceback with -v."""
    script = (
        "import sys, types\n"
        "sys.modules['danbert_convert.cli'] = types.ModuleType('danbert_convert.cli')\n"
        "sys.argv = ['danbert', *sys.argv[1:]]\n"
        "from danbert_convert.__main__ import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", script, "models", "--json"], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    error = "error: ImportError: cannot import name 'cli' from 'danbert_convert.cli'"
    assert r.returncode == 1 and r.stderr.splitlines()[0].startswith(error)
    assert r.stderr.splitlines()[1:] == [HINT]
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["error"].startswith("ImportError")
    r = subprocess.run([sys.executable, "-c", script, "-v", "models"], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Traceback") and r.stderr.splitlines()[-1].startswith(error)


def test_help_lists_commands_in_pipeline_order_one_line_each():
    r = run("--help")
    lines = r.stdout.splitlines()
    listed = lines[lines.index("Commands:") + 1 :]
    assert [line.split()[0] for line in listed] == PIPELINE
    for line in listed:
        name, summary = line.split(maxsplit=1)
        assert line.startswith(f"  {name} ") and not summary.endswith("...")
        assert summary == COMMANDS[name][0]


@pytest.mark.parametrize("name", PIPELINE)
def test_subcommand_help_has_verbosity_and_ends_with_examples(name):
    r = run(name, "--help")
    assert r.exit_code == 0
    assert "-v, --verbose" in r.stdout and "-q, --quiet" in r.stdout
    examples = COMMANDS[name][1]
    assert examples and all(e.startswith(f"danbert {name}") for e in examples)
    lines = r.stdout.rstrip("\n").splitlines()
    assert lines[-len(examples) - 1 :] == ["  Examples:", *(f"    {e}" for e in examples)]


@pytest.mark.parametrize("example", [e for _, examples in COMMANDS.values() for e in examples])
def test_every_example_parses(example):
    """Each example's arguments parse as its command's (paths need not exist)."""
    args = shlex.split(example)[1:]
    with cli.make_context("danbert", list(args)) as ctx:
        name, cmd, rest = cli.resolve_command(ctx, list(args))
        assert cmd is not None and name == args[0]
        cmd.make_context(name, rest, parent=ctx).close()


def test_sample_examples_run(tmp_path, monkeypatch):
    """The examples on the bundled sample, run as written, in pipeline order, offline."""
    monkeypatch.chdir(tmp_path)
    ran = []
    for name in PIPELINE:
        for example in COMMANDS[name][1]:
            if SAMPLE not in example and "danish_bert_sample" not in example:
                continue
            r = run(*shlex.split(example)[1:])
            assert r.exit_code == 0, (example, r.output)
            if "--json" in example:
                one_document(r, name)
            ran.append(name)
    assert ran == ["fetch", "convert", "verify", "all", "inspect"]


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal for stderr")
def test_json_in_a_real_process_with_a_progress_bar(full_release, tmp_path):
    """stdout holds exactly the JSON document while the progress bar draws on stderr (a
    terminal, so tqdm shows it), and on failure too."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # A terminal 80 columns wide: in one of 0 columns (a new pty's) tqdm draws nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    drawn = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        cmd = [*DANBERT, "convert", str(full_release), str(tmp_path / "out"), "--json"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    assert r.returncode == 0, drawn.decode(errors="replace")
    doc = json.loads(r.stdout)
    conforms(doc, "convert")
    assert doc["ok"] is True and doc["out"] == str(tmp_path / "out")
    assert b"convert: 100%" in drawn
    r = subprocess.run([*DANBERT, "verify", str(tmp_path / "missing"), "--json"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    error = f"{tmp_path / 'missing'}: not a folder"
    assert r.returncode == 3
    assert json.loads(r.stdout) == {"ok": False, "error": error, "exit_code": 3}
    assert r.stderr == f"error: {error}\n"


def test_json_before_the_subcommand_still_gets_its_json_document() -> None:
    """-q/-v are accepted before the subcommand, so users type `danbert --json models` too: a
    usage error then, but with --json on the line stdout must still hold the JSON failure
    (it does for `danbert --bogus --json`: click's parser consumed '--json' from the list
    that make_context tests afterwards)."""
    r = CliRunner().invoke(cli, ["--json", "models"])
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {
        "ok": False,
        "error": "No such option '--json'. Did you mean '--version'?",
        "exit_code": 2,
    }


@pytest.mark.parametrize("args", [["models"], ["models", "--json"]])
def test_a_reader_that_goes_away_is_exit_141_and_no_error(args):
    """`danbert models | head -c0`: stdout's pipe closed before anything is written. The
    process ends as SIGPIPE would end it for a shell (141), with nothing on stderr."""
    p = subprocess.Popen([sys.executable, "-m", "danbert_convert", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before the interpreter has even started: the first write fails
    stderr = p.stderr.read().decode()
    assert (p.wait(timeout=60), stderr) == (141, "")
