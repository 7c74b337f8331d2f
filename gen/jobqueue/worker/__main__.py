"""Run a worker: ``python -m jobqueue.worker MODULE:ATTRIBUTE`` (``--help`` lists its settings; exit codes:
jobqueue.runtime.service).

``MODULE:ATTRIBUTE`` names a Worker: ``myapp:worker`` imports ``myapp`` (found
from the current directory too, as ``python -m`` puts it first on sys.path) and
runs its ``worker``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from jobqueue.runtime.service import EXIT_BAD_CONFIG
from jobqueue.worker.app import Worker

PROG = "python -m jobqueue.worker MODULE:ATTRIBUTE"


def load(spec: str) -> Worker:
    """The Worker ``spec`` (``module:attribute``) names; ValueError saying why not."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r} is not MODULE:ATTRIBUTE (myapp:worker, say)")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        # Any exception, not just ImportError: a module that fails while importing stops the worker now, named.
        raise ValueError(f"module {module_name!r} cannot be imported ({type(error).__name__}: {error})") from error
    worker = getattr(module, attribute, None)
    if not isinstance(worker, Worker):
        raise ValueError(f"{spec!r} is not a jobqueue.worker.Worker (it is {type(worker).__name__})")
    return worker


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0].startswith("-"):
        return Worker().run(arguments, prog=PROG)  # --help, which lists the settings, or a usage error
    if not arguments:
        print(f"jobqueue.worker: name the Worker to run: {PROG} (--help lists the settings)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        worker = load(arguments[0])
    except ValueError as error:
        print(f"jobqueue.worker: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return worker.run(arguments[1:], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
