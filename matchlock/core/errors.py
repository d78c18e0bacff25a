"""Every error matchlock raises, in one tree split by whose fault it is.

::

    MatchlockError
    ├── UsageError               the caller misused the API (a bug in the embedding program)
    ├── InputError               something from outside is wrong: fix the input, not the code
    │   ├── ConfigError          a config file breaks the schema (every problem, with its JSON path)
    │   ├── RestrictionError     a room asks for pieces its match-lock config lacks or forbids
    │   ├── SignatureError       a room config is not validly signed by every expected user
    │   ├── KeyFileError         a key file cannot be read as an Ed25519 key
    │   ├── IllegalEventError    an event is not legal in the current state (state unchanged)
    │   ├── JoinRefusedError     the room host refused this member (with the host's code and reason)
    │   ├── RoomIncompleteError  the room cannot complete (with every member's and piece's state)
    │   ├── LogError             an event log cannot be trusted
    │   │   ├── LogCorruptError  a changed, removed, duplicated or reordered line (with its number)
    │   │   └── LogConflictError another writer appended to the log first (a shared store)
    │   ├── FolderDigestError    a folder cannot be digested (a link, a special file)
    │   ├── MessageError         bytes from a peer are not a protocol message (protocol.py)
    │   ├── ProtocolError        the host sent what a correct host never sends (client.py)
    │   ├── DownloadError        some pieces could not be installed, each with its reasons
    │   ├── ArchiveError         an archive member or the archive itself was refused
    │   ├── BadURLError          a room URL cannot be joined or listened on (transport)
    │   └── NoHostFound          no host of a ``lan://`` room answered (transport)
    ├── LogWriteError            an event log could not be written (the disk full or failing)
    ├── HostFailedError          a room host could not write its logs, and stopped (app)
    ├── ConnectionClosed         a transport connection is closed (transport)
    │   ├── FrameTooLarge        the peer sent a frame over the transport's limit
    │   └── HandshakeFailed      the host did not complete the websocket handshake (transport)
    └── SimulationFailure        a simulated room broke an invariant (sim)

Parsing hostile input never lets an unexpected exception escape: decoders turn every failure
into one of the typed errors above, carrying the fact a user needs to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matchlock.core.room import RoomState


class MatchlockError(Exception):
    """Root of every error matchlock raises on purpose.

    ``lines`` is set by the errors whose message is a headline and a list (every problem of a
    config, every piece that failed): the message is those lines joined by newlines, and a
    program that shows the error shows each line as a line of its own, each escaped for display
    (:func:`~matchlock.core.safe_text.printable_error`). Empty for a one-line message: a newline
    inside it came from the input it quotes, and is escaped like any control character.
    """

    lines: tuple[str, ...] = ()

    def _set_lines(self, headline: str, items: list[str]) -> None:
        self.lines = (headline, *items)
        super().__init__("\n".join(self.lines))


class UsageError(MatchlockError):
    """The calling program used the API wrongly; the input was not at fault."""


class InputError(MatchlockError):
    """Something that came from outside (a file, a peer, a download) is not acceptable."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a JSON path such as ``$.collections.chars``), what,
    and the offending value (already rendered for display)."""

    path: str
    message: str
    value: str = ""

    def __str__(self) -> str:
        shown = f" (got {self.value})" if self.value else ""
        return f"{self.path}: {self.message}{shown}"


class ConfigError(InputError):
    """A config breaks the schema. ``problems`` lists every problem found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        self._set_lines(f"{source}: {len(problems)} problem(s)", [f"  - {p}" for p in problems])


class RestrictionError(InputError):
    """A room config does not fit its match-lock config or its own piece restrictions."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        headline = f"the room breaks {len(problems)} restriction(s)"
        self._set_lines(headline, [f"  - {p}" for p in problems])


class SignatureError(InputError):
    """A room config is not signed validly by every expected user.

    Each list names users: ``missing`` did not sign, ``malformed`` signed with something that is
    not an Ed25519 signature, ``wrong`` signed with a signature that does not verify, and
    ``unexpected`` are signers that the config does not expect.
    """

    def __init__(
        self,
        room_id: str,
        missing: list[str],
        malformed: list[str],
        wrong: list[str],
        unexpected: list[str],
    ) -> None:
        self.room_id = room_id
        self.missing = missing
        self.malformed = malformed
        self.wrong = wrong
        self.unexpected = unexpected
        parts = [
            f"{label}: {', '.join(users)}"
            for label, users in (
                ("missing signature", missing),
                ("malformed signature", malformed),
                ("wrong signature", wrong),
                ("signature from an unexpected user", unexpected),
            )
            if users
        ]
        super().__init__(f"room {room_id!r} is not validly signed; " + "; ".join(parts))


class KeyFileError(InputError):
    """A key file is missing, unreadable, or does not hold an Ed25519 key."""


class IllegalEventError(InputError):
    """An event is not legal in the current state. Nothing was changed.

    ``machine`` is ``piece``, ``member`` or ``room``; ``subject`` names the instance
    (for example ``alice chars/kfm``); ``state`` is where it was and ``trigger`` what was asked.
    """

    def __init__(self, machine: str, subject: str, state: str, trigger: str, why: str = "") -> None:
        self.machine = machine
        self.subject = subject
        self.state = state = str(state)  # a status enum is named by its value
        self.trigger = trigger
        self.why = why
        extra = f": {why}" if why else ""
        super().__init__(f"{machine} {subject}: {trigger!r} is not legal in state {state!r}{extra}")


class JoinRefusedError(InputError):
    """The room host refused this member; ``code`` and ``reason`` are the host's words."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"the room refused to let us in: {code}: {reason}")


class RoomIncompleteError(InputError):
    """The room cannot complete. ``state`` (a :class:`matchlock.core.room.RoomState`) holds every
    member's and every piece's state as this member last saw it, failures included."""

    def __init__(self, why: str, state: RoomState) -> None:
        self.why = why
        self.state = state
        super().__init__(f"the room cannot complete: {why}")


class LogError(InputError):
    """An event log cannot be read or trusted."""


class LogCorruptError(LogError):
    """A log line was changed, removed, duplicated or reordered. ``line`` is 1-based."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


class LogConflictError(LogError):
    """Another writer appended to a shared log (``name``) after this one last read or wrote
    it: the append was refused, so the log holds no fork. Nothing of the refused line was
    stored; read the log again (reopen it) and decide anew from what it holds."""

    def __init__(self, name: str, expected: int, reason: str) -> None:
        self.name = name
        self.expected = expected
        super().__init__(
            f"{name}: another writer appended first (this writer expected the log to end at "
            f"stream sequence {expected}): {reason}; reopen the log to continue it"
        )


class LogWriteError(MatchlockError):
    """The store of an event log (``name``) refused a write or a sync (``cause``: the disk
    full, a file over its size limit, an I/O error). The log writes nothing more: a line after
    a failed write could follow a torn one, which would be damage, not a torn tail. What it
    held stays; opening it again cuts a torn last line off and continues the chain."""

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = name
        self.cause = cause
        super().__init__(f"cannot write the event log {name}: {cause}")


class HostFailedError(MatchlockError):
    """A room host could not make its logs durable (the disk full or failing, the store lost),
    or its sender met an error it has no answer for (a bug: ``what`` says so), so it stopped:
    it sent nothing its logs may not hold, closed every connection and wrote nothing more (a
    line after a torn one would damage the log). What the logs hold is kept: a restart
    recovers every room from them, and members reconnect with what they heard."""

    def __init__(self, cause: BaseException, what: str = "could not write its logs") -> None:
        self.cause = cause
        super().__init__(
            f"the room host {what} ({type(cause).__name__}: {cause}), so it "
            "stopped; every room is in its log as far as any member heard: restart the host "
            "to go on"
        )


class FolderDigestError(InputError):
    """A folder holds something that cannot be part of installed content (a link, a device)."""
