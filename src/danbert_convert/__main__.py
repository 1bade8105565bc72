"""The `danbert` command and `python -m danbert_convert`.

This module imports nothing heavy, so that Ctrl-C at any moment, the CLI's own imports
included, ends with one line "interrupted" and exit status 130, never a traceback.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    code: int | str | None = 0
    try:
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
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from danbert_convert.errors import EXIT_INTERRUPTED

        sys.stderr.write("interrupted\n")
        code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
