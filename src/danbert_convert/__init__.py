"""Convert Google-BERT TensorFlow 1 checkpoints (BotXo's Danish BERT first) to transformers.

The Python API is the `danbert` command's, stage for stage::

    from danbert_convert import convert, fetch, verify

    fetched = fetch("danish-bert-sample", "work")
    converted = convert(fetched.checkpoint_dir, "danish-bert")
    verify(converted.out).raise_if_failed()

The functions and result types are imported on first use, so that `import danbert_convert`
(and `danbert --help`) loads neither numpy nor torch. Errors are `DanbertError`s, each with
the `exit_code` the command exits with.
"""

# No import runs here, not even typing's: `python -m danbert_convert` imports this package
# before __main__ can turn Ctrl-C into "interrupted", and `danbert --help` pays for every
# module loaded. (Type checkers take this TYPE_CHECKING as typing's.)
TYPE_CHECKING = False

__version__ = "0.1.0"

if TYPE_CHECKING:
    from danbert_convert.errors import (
        DanbertError,
        DownloadError,
        InputError,
        OutputExistsError,
        VerifyError,
    )
    from danbert_convert.releases.registry import DEFAULT_MODEL, RELEASES, Release
    from danbert_convert.stages.convert import ConvertResult, convert
    from danbert_convert.stages.fetch import FetchResult, fetch
    from danbert_convert.stages.inspect import Listing, Variable, inspect_checkpoint
    from danbert_convert.stages.verify import Check, Report, verify
    from danbert_convert.stages.workflow import AllResult, StageTime, run_all

# Each lazy name and the module that defines it. The stage functions themselves, not
# wrappers: a parameter added to a stage is part of the API at once.
_LAZY = {
    "fetch": "stages.fetch",
    "FetchResult": "stages.fetch",
    "convert": "stages.convert",
    "ConvertResult": "stages.convert",
    "verify": "stages.verify",
    "Report": "stages.verify",
    "Check": "stages.verify",
    "run_all": "stages.workflow",
    "AllResult": "stages.workflow",
    "StageTime": "stages.workflow",
    "inspect_checkpoint": "stages.inspect",
    "Listing": "stages.inspect",
    "Variable": "stages.inspect",
    "RELEASES": "releases.registry",
    "Release": "releases.registry",
    "DEFAULT_MODEL": "releases.registry",
    "DanbertError": "errors",
    "InputError": "errors",
    "OutputExistsError": "errors",
    "DownloadError": "errors",
    "VerifyError": "errors",
}

__all__ = [
    "fetch",
    "convert",
    "verify",
    "run_all",
    "inspect_checkpoint",
    "FetchResult",
    "ConvertResult",
    "Report",
    "Check",
    "AllResult",
    "StageTime",
    "Listing",
    "Variable",
    "RELEASES",
    "Release",
    "DEFAULT_MODEL",
    "DanbertError",
    "InputError",
    "OutputExistsError",
    "DownloadError",
    "VerifyError",
    "__version__",
]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (PEP 562), and keep the name."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
