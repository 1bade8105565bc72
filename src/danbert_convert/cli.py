"""The `danbert` command: a thin layer over the Python API of each stage."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, TypeVar

import click

from danbert_convert import __version__
from danbert_convert.defaults import (
    DEFAULT_DEST,
    FORMATS,
    HEAD_SETTINGS,
    HIDDEN_ACTS,
    PARTS,
    READERS,
    RETRIES,
    TIMEOUT,
    ReaderName,
    WeightFormat,
)
from danbert_convert.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    DanbertError,
    VerifyError,
    one_line,
)

log = logging.getLogger("danbert_convert")
F = TypeVar("F", bound=Callable[..., Any])


JSON_MODE = "danbert.json"  # ctx.meta key: the subcommand was given --json
JSON_DONE = "danbert.json_printed"  # ctx.meta key: the command printed its JSON already
JSON_STDOUT = "danbert.stdout"  # ctx.meta key: the real stdout while a --json command runs
UNEXPECTED_HINT = "hint: an unexpected error; rerun with -v to see the traceback"

# The commands in pipeline order, as `danbert --help` lists them: a one-line summary and the
# examples that end the command's help (tests/test_cli.py parses every one and runs those on
# the bundled sample).
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "fetch": ("Download a release, check its SHA-256 and unpack it.", [
        "danbert fetch danish-bert-sample --dest danbert-work",
        "danbert fetch --from ~/Downloads/danish_bert_uncased_v2.zip --json",
    ]),
    "convert": ("Convert a TF1 checkpoint folder into a transformers folder.", [
        "danbert convert danbert-work/danish_bert_sample danish-bert-sample",
        "danbert convert danish_bert_uncased_v2/ danish-bert/ --format both -q",
    ]),
    "verify": ("Prove a converted folder computes what its checkpoint does.", [
        "danbert verify danish-bert-sample --json",
        "danbert verify danish-bert/ --against danish_bert_uncased_v2/ --expect københavn",
    ]),
    "all": ("Fetch, convert and verify in one go, skipping what is done.", [
        "danbert all danish-bert-sample",
        "danbert all --from ~/Downloads/danish_bert_uncased_v2.zip --out danish-bert",
    ]),
    "inspect": ("List a checkpoint's variables and vocab, from the .index alone.", [
        "danbert inspect danbert-work/danish_bert_sample",
        "danbert inspect danish_bert_uncased_v2/bert_model.ckpt.index --json",
    ]),
    "models": ("List the known releases.", [
        "danbert models --json",
    ]),
}  # fmt: skip


def _verbosity(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """-v/-q after the subcommand's name: they add to those given before it."""
    if not value:
        return
    root = ctx.find_root()
    if root.obj is None:  # the command invoked on its own, without the group
        root.obj = {"quiet": False, "verbose": 0}
    if param.name == "verbose":
        root.obj["verbose"] += value
    else:
        root.obj["quiet"] = True
    _setup_logging(root.obj["verbose"], root.obj["quiet"])


class _Command(click.Command):
    """A subcommand: -v/-q after its name too, its summary and examples from COMMANDS, and
    with --json nothing on stdout but its one JSON document (anything else printed goes to
    stderr)."""

    def __init__(self, name: str | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        summary, examples = COMMANDS.get(name or "", (None, []))
        self.short_help = self.short_help or summary
        if self.epilog is None and examples:
            self.epilog = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples)
        self.params += [
            click.Option(["-v", "--verbose"], count=True, expose_value=False,
                         callback=_verbosity, help="More detail (debug messages, tracebacks)."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                         callback=_verbosity, help="Only warnings and errors; no progress bars."),
        ]  # fmt: skip

    def invoke(self, ctx: click.Context) -> Any:
        if not ctx.params.get("as_json"):
            return super().invoke(ctx)
        ctx.meta[JSON_STDOUT] = sys.stdout
        with redirect_stdout(sys.stderr):
            return super().invoke(ctx)


class _Group(click.Group):
    """Errors become one line on stderr and an exit code (and, with --json, a JSON object on
    stdout); Ctrl-C at any point, argument parsing included, is "interrupted" and 130, never
    click's "Aborted!" and 1; an unexpected error is one line and a hint, its traceback only
    with -v."""

    command_class = _Command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Pipeline order, then any others by name."""
        names = super().list_commands(ctx)
        return [n for n in COMMANDS if n in names] + [n for n in names if n not in COMMANDS]

    def make_context(
        self, info_name: str | None, args: list[str], *rest: Any, **kwargs: Any
    ) -> click.Context:
        # Before parsing: click's parser takes the arguments it reads out of `args`.
        as_json = "--json" in args
        try:
            return super().make_context(info_name, args, *rest, **kwargs)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            if as_json:
                click.echo(_failure("interrupted", EXIT_INTERRUPTED))
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except click.ClickException as e:  # a usage error before the subcommand
            if as_json:
                click.echo(_failure(" ".join(e.format_message().split()), e.exit_code))
            raise

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Read from the raw arguments: a usage error may come before --json is parsed.
        ctx.meta[JSON_MODE] = "--json" in args
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DanbertError as e:
            log.debug("traceback", exc_info=True)
            self._fail(ctx, f"error: {e}", one_line(e), e.exit_code)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted", "interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _stdout_gone()
            ctx.exit(EXIT_BROKEN_PIPE)
        except OSError as e:  # disk full, permission denied: the message names the file
            log.debug("traceback", exc_info=True)
            self._fail(ctx, f"error: {one_line(e)}", one_line(e), 1)
        except click.ClickException as e:  # usage errors: click reports them on stderr
            _echo_json_error(ctx, " ".join(e.format_message().split()), e.exit_code)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: one line and a hint; the traceback with -v
            verbose = (ctx.obj or {}).get("verbose", 0)
            if verbose:
                click.echo(traceback.format_exc().rstrip(), err=True)
            message = type(e).__name__ + (f": {one_line(e)}" if str(e).strip() else "")
            click.echo(f"error: {message}", err=True)
            if not verbose:
                click.echo(UNEXPECTED_HINT, err=True)
            _echo_json_error(ctx, message, 1)
            ctx.exit(1)
        return None  # not reached: _fail exits

    @staticmethod
    def _fail(ctx: click.Context, line: str, message: str, code: int) -> None:
        click.echo(line, err=True)
        _echo_json_error(ctx, message, code)
        ctx.exit(code)


def _failure(message: str, code: int) -> str:
    return json.dumps({"ok": False, "error": message, "exit_code": code}, ensure_ascii=False)


def _stdout_gone() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again:
    nobody reads what is left, and the exit status says what happened."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _echo_json_error(ctx: click.Context, message: str, code: int) -> None:
    """With --json, every failure is also a JSON object on stdout, for scripts."""
    if ctx.meta.get(JSON_MODE) and not ctx.meta.get(JSON_DONE):
        ctx.meta[JSON_DONE] = True
        click.echo(_failure(message, code))


def _echo_json(ctx: click.Context, doc: dict[str, Any]) -> None:
    """The command's JSON document, on the real stdout (see _Command.invoke)."""
    ctx.meta[JSON_DONE] = True
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    click.echo(text, file=ctx.meta.get(JSON_STDOUT, sys.stdout))


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = prefix + record.getMessage()
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # tqdm.write keeps a running progress bar intact; with no bar drawn, plain stderr. (A
        # Ctrl-C inside tqdm's first lock set-up turns into an AttributeError in its cleanup.)
        bars = sys.modules.get("tqdm.std")
        if bars is not None and bars.tqdm._instances:
            bars.tqdm.write(line, file=sys.stderr)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log.handlers[:] = [_EchoHandler()]
    log.setLevel(level)
    log.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="danbert")
@click.option("-v", "--verbose", count=True, help="More detail (debug messages, tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Convert BotXo's Danish BERT (or any Google-BERT TF1 checkpoint) for transformers."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


def progress_enabled(ctx: click.Context) -> bool | None:
    """False with -q; None lets tqdm decide (it hides itself when stderr is not a terminal)."""
    return False if ctx.find_root().obj.get("quiet") else None


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply several click options as one decorator, in reading order."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# Where a release comes from: shared by fetch and all.
source_options = _options(
    click.option(
        "--url",
        "urls",
        multiple=True,
        help="Download from URL instead of the registry (repeat: tried in order).",
    ),
    click.option(
        "--sha256",
        callback=lambda ctx, param, value: _check_sha256(value),
        help="Expected SHA-256 of the zip (none are published upstream).",
    ),
    click.option(
        "--from",
        "from_path",
        type=click.Path(path_type=Path),
        help="A local zip (unpacked into --dest) or unpacked folder (used where it is).",
    ),
    click.option(
        "--retries",
        type=click.IntRange(0),
        default=RETRIES,
        show_default=True,
        help="Retries per source after failures that made no progress.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=TIMEOUT[1],
        show_default=True,
        help="Seconds to wait for data before retrying (connecting: 10 s).",
    ),
)
reader_option = click.option(
    "--reader", type=click.Choice(READERS), default="auto", show_default=True,
    help="Checkpoint reader (auto: the built-in one).",
)  # fmt: skip
hidden_act_option = click.option(
    "--hidden-act", type=click.Choice(HIDDEN_ACTS),
    help="Activation written to config.json (default: bert_config.json's).",
)  # fmt: skip
heads_option = click.option(
    "--heads", type=click.Choice(HEAD_SETTINGS), default="auto", show_default=True,
    help="Heads to write: the checkpoint's (auto); MLM and next-sentence, failing if one is "
    "missing (all); MLM only (mlm: BertForMaskedLM); none (BertModel).",
)  # fmt: skip
part_option = click.option(
    "--part", type=click.Choice(PARTS), default=None,
    help="ELECTRA: the network to convert (default: discriminator).",
)  # fmt: skip
expect_option = click.option(
    "--expect", metavar="TOKEN", help="Fail unless TOKEN is in the first fill-mask top 5."
)
card_option = click.option(
    "--card/--no-card", default=True, show_default=True,
    help="Write the model card OUT/README.md (a README.md of yours is always kept).",
)  # fmt: skip


def _check_sha256(value: str | None) -> str | None:
    """A malformed --sha256 is a usage error (exit 2), found before anything is downloaded."""
    if value is None:
        return None
    from danbert_convert.stages.fetch import check_sha256  # imported only when the option is given

    try:
        return check_sha256(value)
    except DanbertError:
        raise click.BadParameter(f"{value!r} is not a SHA-256 hex digest (64 hex digits)") from None


def _check_one_source(urls: tuple[str, ...], from_path: Path | None) -> None:
    if urls and from_path is not None:
        raise click.UsageError("--url and --from exclude each other: download, or use a local copy")


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint prefix (default: discovered in SRC).",
)
@click.option(
    "--config", type=click.Path(path_type=Path),
    help="bert_config.json to use (ELECTRA: optional; its --hparams JSON or a config.json).",
)  # fmt: skip
@click.option("--vocab", type=click.Path(path_type=Path), help="vocab.txt to use.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="safetensors",
    show_default=True,
    help="Weights file(s) to write.",
)
@click.option(
    "--lowercase/--no-lowercase",
    default=None,
    help="Tokenizer casing (default: inferred from the vocab).",
)
@click.option(
    "--strip-accents/--no-strip-accents",
    default=None,
    help="Strip every accent, or none, as BERT does (default: strip all but the accented "
    "letters the vocab holds, e.g. keep Danish å).",
)
@hidden_act_option
@heads_option
@part_option
@reader_option
@click.option(
    "--ignore-unknown",
    is_flag=True,
    help="Convert even if the checkpoint has variables this tool does not know; list them.",
)
@click.option(
    "--hash-sources",
    is_flag=True,
    help="Record the SHA-256 of the checkpoint's data shards too (reads them whole once more).",
)
@card_option
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def convert(
    ctx: click.Context, src: Path, out: Path, fmt: WeightFormat, as_json: bool, **options: Any
) -> None:
    """Convert the BERT or ELECTRA checkpoint folder SRC into the transformers model folder OUT."""
    from danbert_convert.stages.convert import convert as run
    from danbert_convert.stages.convert import reuse_freed_memory

    reuse_freed_memory()
    result = run(src, out, format=fmt, progress=progress_enabled(ctx), **options)
    if as_json:
        _echo_json(ctx, {"ok": True, **result.to_dict()})
        return
    skipped = Counter(result.skipped.values())
    click.echo(
        f"{result.out}: {result.architecture}, {result.tensors} tensors "
        f"({result.weight_bytes / 1e6:.1f} MB)"
        + "".join(f"; skipped {n} ({reason})" for reason, n in sorted(skipped.items()))
    )


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def models_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the known releases that `danbert fetch` can download."""
    from danbert_convert.releases.registry import DEFAULT_MODEL, RELEASES

    if as_json:
        rows = [{**r.to_dict(), "default": r.name == DEFAULT_MODEL} for r in RELEASES.values()]
        _echo_json(ctx, {"ok": True, "models": rows})
        return
    width = max(len(name) for name in RELEASES) + 2
    lic = max(len(r.license) for r in RELEASES.values()) + 2
    lang = max(len(r.language) for r in RELEASES.values()) + 2
    click.echo(f"  {'NAME':<{width}}{'LANG':<{lang}}CASED  {'LICENSE':<{lic}}FAMILY   NOTES")
    for r in RELEASES.values():
        mark = "*" if r.name == DEFAULT_MODEL else " "
        notes = ("BROKEN: " if r.broken else "") + ("SAMPLE: " if r.sample_of else "") + r.notes
        line = f"{mark} {r.name:<{width}}{r.language:<{lang}}{'yes' if r.cased else 'no':<7}"
        click.echo(f"{line}{r.license:<{lic}}{r.family:<9}{notes}".rstrip())
    click.echo("(* default; sources: danbert models --json)")


@cli.command("fetch")
@click.argument("model", required=False)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for the zip and the unpacked release.",
)
@source_options
@click.option("--no-unpack", is_flag=True, help="Only download and verify the zip.")
@click.option("-f", "--force", is_flag=True, help="Download and unpack again even if present.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def fetch_cmd(
    ctx: click.Context,
    model: str | None,
    dest: Path,
    urls: tuple[str, ...],
    sha256: str | None,
    from_path: Path | None,
    no_unpack: bool,
    retries: int,
    timeout: float,
    force: bool,
    as_json: bool,
) -> None:
    """Download MODEL (default: the Danish v2 release), verify it and unpack it.

    Prints the checkpoint folder that `danbert convert` takes. An interrupted download
    resumes when run again; an existing verified zip is not downloaded again.
    """
    _check_one_source(urls, from_path)
    from danbert_convert.stages.fetch import fetch

    try:
        result = fetch(
            model,
            dest,
            urls=urls,
            sha256=sha256,
            from_path=from_path,
            force=force,
            do_unpack=not no_unpack,
            progress=progress_enabled(ctx),
            retries=retries,
            timeout=timeout,
        )
    except KeyboardInterrupt:
        log.warning(f"the partial download in {dest} is kept; run the same command to resume")
        raise
    if as_json:
        _echo_json(ctx, {"ok": True, **result.to_dict()})
    else:
        click.echo(result.zip_path if no_unpack else result.checkpoint_dir)


@cli.command("verify")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    help="The source release folder (default: the one recorded in the manifest, if present).",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="The source's config, when it is not in the source folder (as given to convert).",
)
@reader_option
@expect_option
@click.option(
    "--sentence",
    "sentences",
    multiple=True,
    help="Fill-mask sentence with [MASK] (repeatable; default: built-in Danish ones).",
)
@click.option(
    "--write-card",
    is_flag=True,
    help="(Re)write the model card OUT/README.md with the result, if every check passes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    out: Path,
    against: Path | None,
    config: Path | None,
    reader: ReaderName,  # click.Choice(READERS) hands over one of these
    expect: str | None,
    sentences: tuple[str, ...],
    write_card: bool,
    as_json: bool,
) -> None:
    """Prove that the converted folder OUT loads and computes what the checkpoint computes."""
    from danbert_convert.stages.verify import verify

    report = verify(
        out,
        against=against,
        config=config,
        reader=reader,
        expect=expect,
        sentences=sentences or None,
        progress=progress_enabled(ctx),
        write_card=write_card,
    )
    if not as_json:
        click.echo(report.table())
        report.raise_if_failed()
        return
    data = report.to_dict()  # "ok" is the report's verdict
    try:
        report.raise_if_failed()
    except VerifyError as e:
        # One JSON document on stdout: the report, with the error the group reports on stderr.
        data.update(error=one_line(e), exit_code=e.exit_code)
        _echo_json(ctx, data)
        raise
    _echo_json(ctx, data)


@cli.command("all")
@click.argument("model", required=False)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEST,
    show_default=True,
    help="Working folder for the zip and the unpacked release.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder to write (default: ./MODEL, or ./danbert-model with --url/--from).",
)
@source_options
@reader_option
@hidden_act_option
@heads_option
@part_option
@expect_option
@card_option
@click.option("-f", "--force", is_flag=True, help="Redo every stage.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def all_cmd(ctx: click.Context, model: str | None, as_json: bool, **options: Any) -> None:
    """Fetch, convert and verify MODEL (default: the Danish v2 release) in one go.

    A stage whose result is already present and valid is not redone.
    """
    _check_one_source(options["urls"], options["from_path"])
    from danbert_convert.stages.convert import reuse_freed_memory
    from danbert_convert.stages.workflow import run_all

    reuse_freed_memory()
    try:
        result = run_all(model, progress=progress_enabled(ctx), **options)
    except VerifyError as e:
        report = getattr(e.report, "to_dict", None)
        if as_json and report is not None:  # the failure, with the checks that tell why
            doc = {"ok": False, "error": one_line(e), "exit_code": e.exit_code, "report": report()}
            _echo_json(ctx, doc)
        raise
    if as_json:
        _echo_json(ctx, {"ok": True, **result.to_dict()})
        return
    for s in result.stages:
        click.echo(f"{s.stage:<8} {'skipped' if s.skipped else f'{s.seconds:.1f} s'}")
    click.echo(f"\n{result.architecture} ready in {result.out.resolve()}\n")
    click.echo("from transformers import AutoModel, AutoTokenizer")
    click.echo(result.python_lines())
    if model is not None:
        from danbert_convert.releases.registry import get_release

        real = get_release(model).sample_of
        if real is not None:
            click.echo(f"\n{model} is a bundled sample with random weights. The real release:")
            click.echo(f"  danbert all {real}")


@cli.command("inspect")
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="bert_config.json (default: the one beside the checkpoint, if any).",
)
@click.option(
    "--vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="vocab.txt (default: the one beside the checkpoint, if any).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def inspect_cmd(
    ctx: click.Context, src: Path, config: Path | None, vocab: Path | None, as_json: bool
) -> None:
    """List the variables of the checkpoint in SRC (a folder, a prefix or its .index file).

    For each: shape, dtype, bytes, and the tensor it becomes or why it is skipped. Then the
    vocab: its tokens, letters, casing, the normalisation convert would choose and the tokens
    no text can produce. Reads only the .index file, so the data file need not be there.
    """
    from danbert_convert.stages.inspect import format_listing, inspect_checkpoint

    listing = inspect_checkpoint(src, config=config, vocab=vocab)
    if as_json:
        _echo_json(ctx, {"ok": True, **listing.to_json()})
    else:
        click.echo(format_listing(listing))


def main() -> None:
    """Run `danbert` (see danbert_convert.__main__, the entry point that also guards imports)."""
    from danbert_convert.__main__ import main as run

    run()
