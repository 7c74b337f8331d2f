"""``jobq`` (the console script) and ``python -m jobqueue.cli``: arguments -> environment -> command -> exit code."""

from __future__ import annotations

import os
import shutil
import sys

from jobqueue.cli import commands, parser
from jobqueue.cli.config import Environment
from jobqueue.cli.exits import Exit


def main(argv: list[str] | None = None) -> int:
    """Run ``jobq`` with ``argv`` (the process's arguments when None); returns the exit code."""
    args = parser.parse(parser.build(), argv)
    context = commands.Context(
        env=Environment.from_environ(os.environ),
        stdin=sys.stdin,
        stdout=sys.stdout,
        stderr=sys.stderr,
        width=shutil.get_terminal_size().columns,
    )
    try:
        return int(commands.run(args, context))
    except KeyboardInterrupt:
        # The line the terminal's ^C left unfinished is ended, so that the shell's prompt starts clean.
        sys.stderr.write("\n")
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # Python flushes stdout once more at exit, which would fail again and print a warning:
        # stdout becomes /dev/null instead (what the Python docs advise for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(Exit.STDOUT_CLOSED)


if __name__ == "__main__":
    sys.exit(main())
