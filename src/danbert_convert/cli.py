"""The `danbert` command: a thin layer over the Python API of each stage."""

from __future__ import annotations

import logging
import sys

import click

from danbert_convert import __version__
from danbert_convert.errors import EXIT_INTERRUPTED, DanbertError

log = logging.getLogger("danbert_convert")


class _Group(click.Group):
    """Turns our errors into one line on stderr and their exit code, Ctrl-C into 130."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DanbertError as e:
            log.debug("traceback", exc_info=True)
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        # tqdm.write keeps a running progress bar intact.
        from tqdm import tqdm

        tqdm.write(prefix + record.getMessage(), file=sys.stderr)


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


def main() -> None:
    cli(prog_name="danbert")
