"""The Python API: `from danbert_convert import fetch, convert, verify, ...`.

Light to import, the CLI's options as parameters, typed results, documented errors; and
verify's progress lines.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import danbert_convert
from danbert_convert.cli import cli

SRC = Path(danbert_convert.__file__).resolve().parent.parent
SAMPLE = "danish-bert-sample"
TOP = "danish_bert_sample"
CHECKS = ["files", "weights", "tokenizer", "parity", "fill-mask"]
HEAVY = ("numpy", "torch", "transformers", "tensorflow", "requests", "tokenizers", "safetensors")
ERRORS = {"DanbertError": 1, "InputError": 3, "OutputExistsError": 4, "DownloadError": 5,
          "VerifyError": 6}  # fmt: skip


def run_python(code: str) -> str:
    """`code` in a fresh interpreter that imports this tree; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve or reach a host fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access in an offline test: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The CLI, once run in this process, turns propagation off: attach caplog's handler here.
    logger = logging.getLogger("danbert_convert")
    old = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # each record once
    caplog.handler.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.level, logger.propagate = old


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# --- the import ----------------------------------------------------------------------------


def test_import_loads_nothing_heavy() -> None:
    """`danbert --help` must stay fast: the package's names cost nothing until used."""
    out = run_python(
        "import sys, json, danbert_convert as d\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'stages': 'danbert_convert.stages' in sys.modules,"
        " 'dir': dir(d), 'exit': d.InputError.exit_code, 'version': d.__version__}))"
    )
    got = json.loads(out)
    assert got["heavy"] == [] and got["stages"] is False
    assert set(danbert_convert.__all__) <= set(got["dir"])
    assert got["exit"] == 3 and got["version"] == danbert_convert.__version__


def test_each_name_loads_only_its_stage() -> None:
    out = run_python(
        "import sys, json\n"
        "from danbert_convert import inspect_checkpoint, DEFAULT_MODEL\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert "torch" not in json.loads(out) and "transformers" not in json.loads(out)


def test_names_are_the_stage_functions_whatever_was_imported_first() -> None:
    """Importing a stage module first must not shadow the function of the same name."""
    out = run_python(
        "import danbert_convert.stages.convert, danbert_convert.stages.verify\n"
        "import danbert_convert.stages.fetch, danbert_convert.stages.workflow\n"
        "from danbert_convert import convert, fetch, verify, run_all\n"
        "import danbert_convert as d\n"
        "print([type(f).__name__ for f in (convert, fetch, verify, run_all, d.convert)],"
        " convert is danbert_convert.stages.convert.convert)"
    )
    assert out.split() == ["['function',", "'function',", "'function',", "'function',",
                           "'function']", "True"]  # fmt: skip


def test_public_names() -> None:
    from danbert_convert.stages import convert, fetch, inspect, verify, workflow

    d = danbert_convert
    assert d.fetch is fetch.fetch and d.FetchResult is fetch.FetchResult
    assert d.convert is convert.convert and d.ConvertResult is convert.ConvertResult
    assert d.verify is verify.verify and d.Report is verify.Report and d.Check is verify.Check
    assert d.run_all is workflow.run_all and d.AllResult is workflow.AllResult
    assert d.inspect_checkpoint is inspect.inspect_checkpoint and d.Listing is inspect.Listing
    assert d.RELEASES[d.DEFAULT_MODEL].name == d.DEFAULT_MODEL
    for name in d.__all__:
        assert getattr(d, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        d.nothing  # noqa: B018
    for name, code in ERRORS.items():
        cls = getattr(d, name)
        assert issubclass(cls, d.DanbertError) and cls.exit_code == code
    namespace: dict[str, object] = {}
    exec("from danbert_convert import *", namespace)
    assert set(d.__all__) <= namespace.keys()


def test_py_typed_marker_is_in_the_package() -> None:
    assert resources.files("danbert_convert").joinpath("py.typed").is_file()


# --- the parameters are the CLI's options ----------------------------------------------------

# CLI parameter -> API parameter, where the names differ; None: the command's own (output
# and logging: the API returns results and logs to the `danbert_convert` logger).
RENAMED = {"fmt": "format", "no_unpack": "do_unpack", "as_json": None, "quiet": None,
           "verbose": None}  # fmt: skip
PAIRS = [("fetch", "fetch"), ("convert", "convert"), ("verify", "verify"), ("all", "run_all"),
         ("inspect", "inspect_checkpoint")]  # fmt: skip
REQUIRED = {"convert": ["SRC", "OUT"], "verify": ["OUT"], "inspect": ["SRC"]}


@pytest.mark.parametrize(("command", "function"), PAIRS)
def test_every_cli_option_is_a_parameter(command: str, function: str) -> None:
    """Every option of the command is a parameter of the function, with the same default;
    the function's other parameters are the API's own."""
    from danbert_convert.stages.fetch import _timeouts

    params = inspect.signature(getattr(danbert_convert, function)).parameters
    cmd = cli.commands[command]
    # What the command's function receives when no option is given.
    given = cmd.make_context(command, list(REQUIRED.get(command, []))).params
    for opt in cmd.params:
        assert opt.name is not None
        name = RENAMED.get(opt.name, opt.name)
        if name is None:
            continue
        assert name in params, f"{command} {opt.opts}: no parameter {name!r} in {function}"
        p = params[name]
        if isinstance(opt, click.Argument):
            assert p.kind is p.POSITIONAL_OR_KEYWORD, name
            if opt.required:
                assert p.default is p.empty, name
                continue
        else:
            assert p.kind is p.KEYWORD_ONLY or name in ("model", "dest"), name
        # The CLI's default, in the API's terms.
        default = given[opt.name]
        want = p.default
        if name == "timeout":
            default, want = _timeouts(default), _timeouts(want)  # type: ignore[arg-type]
        if name == "do_unpack":
            default = not default
        if default in (None, ()) and want in (None, ()):  # unset either way
            continue
        assert default == want, f"{command} {opt.opts}: CLI {default!r}, API {want!r}"


@pytest.mark.parametrize("function", ["fetch", "convert", "verify", "run_all",
                                      "inspect_checkpoint"])  # fmt: skip
def test_docstrings_name_every_parameter(function: str) -> None:
    f = getattr(danbert_convert, function)
    doc = inspect.getdoc(f) or ""
    first = next(iter(inspect.signature(f).parameters))
    for name in inspect.signature(f).parameters:
        assert f"`{name}`" in doc or name == first, f"{function}: {name} undocumented"


# --- end to end through the public API ------------------------------------------------------


def packaged_zip() -> bytes:
    path = danbert_convert.RELEASES[SAMPLE].package_data
    assert path is not None
    return resources.files("danbert_convert").joinpath(path).read_bytes()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """The bundled sample fetched and converted through the public API (str paths)."""
    from danbert_convert import convert, fetch

    root = tmp_path_factory.mktemp("api")
    fetched = fetch(SAMPLE, str(root / "work"), progress=False)
    converted = convert(str(fetched.checkpoint_dir), str(root / "model"), format="both",
                        progress=False)  # fmt: skip
    return root, fetched, converted


def test_fetch_result(sample) -> None:
    root, fetched, _ = sample
    data = packaged_zip()
    zip_path = root / "work" / f"{TOP}.zip"
    assert isinstance(fetched, danbert_convert.FetchResult)
    assert fetched.model == SAMPLE
    assert fetched.source.endswith(danbert_convert.RELEASES[SAMPLE].package_data or "?")
    assert fetched.zip_path == zip_path and zip_path.read_bytes() == data
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.size == len(data)
    assert fetched.downloaded is True and fetched.unpacked is True
    assert fetched.checkpoint_dir == root / "work" / TOP
    assert (fetched.checkpoint_dir / "bert_model.ckpt.index").is_file()
    assert (fetched.resumed_from, fetched.received, fetched.tried) == (0, 0, [])


def test_convert_result(sample) -> None:
    """Checked against the files written, read by safetensors and torch, and the checkpoint's
    variables, listed by TensorFlow."""
    import tensorflow as tf
    import torch
    from safetensors.numpy import load_file

    root, fetched, converted = sample
    out = root / "model"
    assert isinstance(converted, danbert_convert.ConvertResult)
    assert converted.out == out
    weights = load_file(out / "model.safetensors")
    assert converted.tensors == len(weights)
    assert converted.weight_bytes == sum(v.nbytes for v in weights.values())
    assert set(torch.load(out / "pytorch_model.bin", weights_only=True)) >= set(weights)
    config = json.loads((out / "config.json").read_text())
    assert [converted.architecture] == config["architectures"] == ["BertForPreTraining"]
    names = [n for n, _ in tf.train.list_variables(str(fetched.checkpoint_dir / "bert_model.ckpt"))]
    training = {n for n in names if n.endswith(("/adam_m", "/adam_v")) or n == "global_step"}
    assert set(converted.skipped) == training
    assert set(converted.skipped.values()) == {"Adam optimizer slot", "training step counter"}
    assert converted.files == sorted(p.name for p in out.iterdir())
    assert any("vocab_size" in w for w in converted.warnings)


def test_verify_report(sample, logs, capsys) -> None:
    from danbert_convert import Check, Report, verify

    root, fetched, converted = sample
    report = verify(str(converted.out), against=str(fetched.checkpoint_dir), progress=False)
    assert isinstance(report, Report) and report.model == converted.out
    assert [c.name for c in report.checks] == CHECKS
    assert all(isinstance(c, Check) for c in report.checks)
    assert [c.status for c in report.checks] == ["pass"] * 4 + ["info"]
    assert report.ok
    report.raise_if_failed()
    parity = report.checks[3]
    assert parity.data["worst"] in parity.data["outputs"]
    assert all(o["diff"] <= o["allowance"] for o in parity.data["outputs"].values())
    assert Report.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    # progress=False: no step lines; nothing ever on stdout.
    assert not [m for m in messages(logs) if m.startswith("verify:")]
    assert capsys.readouterr().out == ""


def test_run_all_result(sample, logs) -> None:
    """run_all over the same work folder: the zip is checked, not copied; convert and verify
    run; a second run keeps all three and returns the saved report, typed."""
    from danbert_convert import AllResult, Report, run_all

    root, fetched, _ = sample
    out = root / "all-model"
    result = run_all(SAMPLE, dest=str(root / "work"), out=str(out), progress=False)
    assert isinstance(result, AllResult)
    assert (result.out, result.checkpoint_dir) == (out, fetched.checkpoint_dir)
    assert result.architecture == "BertForPreTraining"
    assert [(s.stage, s.skipped) for s in result.stages] == [
        ("fetch", True),
        ("convert", False),
        ("verify", False),
    ]
    assert all(s.seconds >= 0 for s in result.stages)
    assert isinstance(result.report, Report) and result.report.ok
    assert [c.name for c in result.report.checks] == CHECKS
    again = run_all(SAMPLE, dest=root / "work", out=out, progress=False)
    assert [s.skipped for s in again.stages] == [True, True, True]
    assert again.report == result.report
    assert not [m for m in messages(logs) if m.startswith("verify:")]


# --- errors ---------------------------------------------------------------------------------


def test_errors_are_the_documented_classes(sample, tmp_path: Path, no_network) -> None:
    from danbert_convert import (
        DownloadError,
        InputError,
        OutputExistsError,
        VerifyError,
        convert,
        fetch,
        verify,
    )

    root, fetched, converted = sample
    with pytest.raises(InputError, match="missing: not a folder") as e:
        convert(tmp_path / "missing", tmp_path / "out")
    assert e.value.exit_code == 3
    with pytest.raises(InputError, match="no-such-release") as e:
        fetch("no-such-release", tmp_path / "work")
    assert e.value.exit_code == 3
    with pytest.raises(OutputExistsError, match="not empty") as e:
        convert(fetched.checkpoint_dir, converted.out)
    assert e.value.exit_code == 4
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as e:
        fetch(SAMPLE, tmp_path / "work", sha256="ab" * 32)
    assert e.value.exit_code == 5
    with pytest.raises(ValueError, match="exclude each other"):
        fetch(urls="http://127.0.0.1:9/x.zip", from_path=tmp_path)
    with pytest.raises(ValueError, match="reader must be one of"):
        verify(converted.out, reader="tf")

    # A failed check is in the report; raise_if_failed turns it into VerifyError (exit 6).
    damaged = tmp_path / "damaged"
    convert(fetched.checkpoint_dir, damaged, progress=False)
    weights = damaged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    report = verify(damaged, progress=False)
    assert not report.ok and report.checks[0].status == "fail"
    assert "model.safetensors changed since conversion" in report.checks[0].detail
    with pytest.raises(VerifyError, match="failed checks: files") as e:
        report.raise_if_failed()
    assert e.value.exit_code == 6


def test_a_single_url_is_not_split_into_characters(tmp_path: Path, local_network) -> None:
    """urls="..." is one URL (the error names it whole), not 30 one-letter sources."""
    from danbert_convert import DownloadError, fetch

    with pytest.raises(DownloadError) as e:
        fetch(urls="http://127.0.0.1:9/x.zip", dest=tmp_path, retries=0, timeout=2)
    assert "http://127.0.0.1:9/x.zip ->" in str(e.value)
    assert "h ->" not in str(e.value)


# --- verify's progress ----------------------------------------------------------------------


def step_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog) if m.startswith("verify:")]


def test_verify_logs_its_steps_in_order(sample, logs, capsys) -> None:
    from danbert_convert import verify

    _, fetched, converted = sample
    report = verify(converted.out, progress=True)
    assert report.ok
    lines = step_lines(logs)
    ckpt = (fetched.checkpoint_dir / "bert_model.ckpt").resolve()
    assert lines[0] == f"verify: {converted.out} against {ckpt}"
    numbered = [line for line in lines if "/5] " in line]
    assert [line.split()[1:3] for line in numbered] == [
        [f"[{i}/5]", f"{name}:"] for i, name in enumerate(CHECKS, 1)
    ]
    assert "loading BertForPreTraining and AutoModel" in numbered[1]
    # Lines other than the numbered ones come before [1/5] (the imports) or within parity.
    for line in lines[1:]:
        if line not in numbered:
            assert line.startswith(("verify: importing", "verify: parity: ")), line
    # The step lines did not stop the reference being computed alongside.
    assert "parity: the worker computed the reference on these inputs" in messages(
        logs, logging.DEBUG
    )
    assert capsys.readouterr().out == ""


def test_verify_without_a_source_says_so(sample, logs, tmp_path: Path) -> None:
    from danbert_convert import verify

    _, fetched, converted = sample
    moved = tmp_path / "moved"
    converted.out.rename(moved)  # the manifest's relative source no longer resolves
    try:
        report = verify(moved)
    finally:
        moved.rename(converted.out)
    assert report.checks[3].status == "skip"
    assert step_lines(logs)[0] == f"verify: {moved}: no source checkpoint, parity will be skipped"


def test_cli_verify_progress_on_stderr_and_hidden_with_q(sample) -> None:
    _, _, converted = sample
    r = CliRunner().invoke(cli, ["verify", str(converted.out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{converted.out}:\n") and "verify:" not in r.stdout
    err = [line for line in r.stderr.splitlines() if line.startswith("verify:")]
    assert [line.split()[1] for line in err if "/5] " in line] == [f"[{i}/5]" for i in range(1, 6)]
    quiet = CliRunner().invoke(cli, ["-q", "verify", str(converted.out)])
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, r.stdout, "")


def test_choice_types_list_the_cli_choices() -> None:
    """The API's Literal types (what type checkers hold a call to) and the CLI's choices are
    the same values."""
    from typing import get_args

    from danbert_convert import defaults

    assert get_args(defaults.ReaderName) == defaults.READERS
    assert get_args(defaults.WeightFormat) == defaults.FORMATS
    assert get_args(defaults.HeadSetting) == defaults.HEAD_SETTINGS
