"""Errors the CLI turns into one line on stderr and a documented exit code."""

from __future__ import annotations


class DanbertError(Exception):
    """Base class: a failure the user can act on. The message is one line."""

    exit_code = 1


class InputError(DanbertError):
    """The source (folder, checkpoint, config, vocab, zip) is missing, malformed or unknown."""

    exit_code = 3


class OutputExistsError(DanbertError):
    """The output location exists and is not empty, and --force was not given."""

    exit_code = 4


class DownloadError(DanbertError):
    """Every source failed, or what was downloaded is not what was expected."""

    exit_code = 5


class VerifyError(DanbertError):
    """A converted model failed one of the verification checks."""

    exit_code = 6
    report: object = None
    """The verify Report whose checks failed, when it was raised for one."""


EXIT_INTERRUPTED = 130
# stdout's reader went away (`danbert models --json | head -c1`): what a shell reports for a
# process that SIGPIPE ended, as `yes | head` ends.
EXIT_BROKEN_PIPE = 141


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (or its class name), for one-line reports."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def with_article(noun: str) -> str:
    """`noun` with its indefinite article, for messages: "an ELECTRA", "a BertModel"."""
    return f"{'an' if noun[:1].upper() in 'AEIOU' else 'a'} {noun}"
