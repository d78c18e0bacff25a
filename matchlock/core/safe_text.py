"""Text that is safe to show a person: every control character shown as its escape.

Logs and peers are hostile input (a refused peer chooses the id and reason recorded about it, a
member the source it reports, a server its error message), and an ESC byte printed raw can
rewrite a terminal's screen or title, a bidirectional override can make one string pass for
another. So every human-facing output (replay's lines and errors, the join and download tables,
the HTML timeline, the CLI's messages and log lines) passes its text through :func:`printable`,
which shows each control character as its escape (ESC as the four characters ``\\x1b``).

What it must never do: import anything heavy (the CLI calls it on its error path, and starts
light), or change a character that is not a control (the text must stay readable).
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""C0 and C1 controls and DEL; and the line separators and bidirectional controls of Unicode,
which reorder or break what a reader sees (so that a hostile string cannot pass for another)."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as its Python escape (``\\x1b``,
    ``\\u202e``), newlines and tabs included, so that it prints as one inert line. Other
    characters, a backslash among them, are kept: ``printable(printable(s)) == printable(s)``."""
    return text if _CONTROL.search(text) is None else _CONTROL.sub(_escape, text)
