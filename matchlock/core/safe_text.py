"""Text that is safe to show a person: every control character shown as its escape.

Logs and peers are hostile input (a refused peer chooses the id and reason recorded about it, a
member the source it reports, a server its error message), and an ESC byte printed raw can
rewrite a terminal's screen or title, a bidirectional override can make one string pass for
another. So every human-facing output (replay's lines and errors, the join and download tables,
the HTML timeline, the CLI's messages and log lines) passes its text through :func:`printable`,
which shows each control character as its escape (ESC as the four characters ``\\x1b``).
An error made of lines (a config's problems) is shown a line at a time
(:func:`printable_error`): the newlines between its lines are its own, any inside one came
from the input, and are escaped.

What it must never do: import anything heavy (the CLI calls it on its error path, and starts
light), or change a character that is not a control (the text must stay readable).
"""

from __future__ import annotations

import re

from matchlock.core.errors import MatchlockError

__all__ = ["printable", "printable_error"]

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


def printable_error(error: BaseException, prefix: str = "") -> str:
    """``prefix`` and ``error``'s message for a terminal: one line for each of the error's own
    ``lines`` (a headline and its list, :class:`~matchlock.core.errors.MatchlockError`), each
    passed through :func:`printable`; any other error as one line."""
    lines = error.lines if isinstance(error, MatchlockError) else ()
    first, *rest = lines or (str(error),)
    return "\n".join(printable(line) for line in (prefix + first, *rest))
