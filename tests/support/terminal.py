"""A command run in a pseudo-terminal, as a person at a terminal runs it (a small pexpect of our own).

The command's stdin, stdout and stderr are the terminal (so ``isatty()`` is true for all three and
``getpass`` turns echo off on it); the test reads what the terminal shows and types into it.
The process gets no controlling terminal (that would need a fork hook), so Ctrl-C is a SIGINT
sent to it, which is what the terminal would send.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Terminal:
    """``argv`` running in a pseudo-terminal ``columns`` wide; everything it shows, as text with ``\\n`` lines."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, *, columns: int = 120) -> None:
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env), cwd=cwd)
        os.close(slave)
        self._shown = bytearray()
        self._closed = False

    @property
    def shown(self) -> str:
        """What the terminal showed so far (carriage returns before a newline dropped, others kept)."""
        return self._shown.decode(errors="replace").replace("\r\n", "\n")

    def expect(self, text: str, timeout: float = 30.0) -> None:
        """Read until ``text`` is shown; fail with what was shown if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while text not in self.shown:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} not shown within {timeout} s; the terminal shows:\n{self.shown}")

    def type(self, text: str) -> None:
        """Type ``text`` (end it with ``\\n`` for Enter)."""
        os.write(self._master, text.encode())

    def interrupt(self) -> None:
        """Ctrl-C."""
        self.process.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Read until the command exits; its exit code and everything it showed (killed after ``timeout``)."""
        deadline = time.monotonic() + timeout
        try:
            while self._read(deadline - time.monotonic()):
                pass
            code = self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout} s; the terminal shows:\n{self.shown}") from None
        finally:
            self.close()
        return code, self.shown

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self._master)

    def _read(self, timeout: float) -> bool:
        """Read what is shown within ``timeout``; False once the command closed the terminal or nothing came."""
        if self._closed or timeout <= 0:
            return False
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            return False
        self._shown += data
        return bool(data)
