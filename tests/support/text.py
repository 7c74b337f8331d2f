"""Reading the line-oriented files the packaging tests check."""

from __future__ import annotations


def logical_lines(text: str) -> list[str]:
    """The lines of a file that continues lines with a backslash (a Dockerfile, a requirements file).

    Continuations joined, whole-line comments and blank lines dropped, as Docker and pip read them.
    """
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the file ends inside a line continuation"
    return lines
