"""The `danbert` command and `python -m danbert_convert`.

This module imports nothing heavy, so that Ctrl-C at any moment, the CLI's own imports
included, ends with one line "interrupted" and exit status 130, never a traceback.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    code: int | str | None = 0
    try:
        # Imported here, not above: `signal` builds enums at import, which Ctrl-C can break.
        import signal

        try:
            from danbert_convert.cli import cli

            cli.main(prog_name="danbert")
        finally:
            # From here on a Ctrl-C could only turn the interpreter's shutdown (joining worker
            # threads) into a traceback: the outcome is decided.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:  # while importing, or where click could not see it
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("interrupted\n")
        if "--json" in sys.argv[1:]:  # scripts parse stdout: one JSON document, always
            sys.stdout.write('{"ok": false, "error": "interrupted", "exit_code": 130}\n')
        code = 130  # EXIT_INTERRUPTED
    except Exception as e:  # a bug outside any command (the CLI's own imports): no bare traceback
        code = _unexpected(e)
    if code == 130:  # EXIT_INTERRUPTED, without importing anything more here
        # CPython makes the process die by SIGINT (status -2, not 130) once a KeyboardInterrupt
        # has left any exec() of a string (dataclasses and namedtuple make classes that way
        # at import time), whatever exit code follows. Our cleanup has run: leave directly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if "torch" in sys.modules and (code is None or isinstance(code, int)):
        # After verify, the interpreter's own teardown (every module of torch and transformers
        # freed object by object) takes 1.5 s of BERT-base's 15: run the exit handlers, flush
        # the output, and leave without it.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


def _unexpected(e: Exception) -> int:
    """What cli._Group does for an error it did not expect, for one raised outside it: one
    line and a hint, or with -v the traceback. Self-contained: the package may be what broke."""
    import json
    import traceback

    args = sys.argv[1:]
    verbose = bool({"-v", "-vv", "--verbose"} & set(args))
    text = str(e).strip()
    message = type(e).__name__ + (f": {text.splitlines()[0]}" if text else "")
    if verbose:
        traceback.print_exc()
    sys.stderr.write(f"error: {message}\n")
    if not verbose:
        sys.stderr.write("hint: an unexpected error; rerun with -v to see the traceback\n")
    if "--json" in args:
        sys.stdout.write(json.dumps({"ok": False, "error": message, "exit_code": 1}) + "\n")
    return 1


if __name__ == "__main__":
    main()
