"""The adversary: peers that try to get into a room without the key, and frames forged onto a
member's connection.

An intruder connects through the simulated network like a member and says ``hello`` as an
expected user (then answers the challenge with a forged signature, or with an answer it
overheard on another connection), or as a user the room does not expect, or sends bytes that
are no message at all. It may come at any time, also after the room closed (a late answer).
Whatever it does, the host must never welcome it: if it is welcomed, that is reported as a
violation of ``members-proved-who-they-are``.

:meth:`Adversary.forge` puts a report onto a member's live connection, as if the member had
sent it: about another user's piece, or about a piece not in the room. The host must refuse it
and go on (the member hears a refusal that is not fatal).

This is the attacker, not a member: it shares no code with the member shell.
"""

from __future__ import annotations

import asyncio
import base64
import random

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.config import RoomConfig
from matchlock.tools.sim.network import Link, Network
from matchlock.tools.testing import insecure_key
from matchlock.transport import ConnectionClosed

__all__ = ["INTRUSIONS", "Adversary"]

INTRUSIONS = ("forged", "replayed", "unknown-user", "garbage")
"""What an intruder tries."""

PATIENCE = 2.0
"""Virtual seconds an intruder waits for the host's next frame."""


class Adversary:
    """Intruders and forged frames, chosen by ``rng``."""

    def __init__(self, rng: random.Random, room: RoomConfig, network: Network) -> None:
        self.rng = rng
        self.room = room
        self.network = network
        self.welcomed: list[str] = []  # who the host let in without the key: a violation
        self.tasks: list[asyncio.Task[None]] = []

    def intrude(self, kind: str | None = None) -> None:
        """Start one intruder (``kind`` from :data:`INTRUSIONS`, or the seed's choice)."""
        kind = kind or self.rng.choice(INTRUSIONS)
        user = self.rng.choice(sorted(self.room.users))
        try:
            link = self.network.connect(None)
        except ConnectionRefusedError:
            return  # the host is down
        self.tasks.append(asyncio.get_running_loop().create_task(self._intruder(link, kind, user)))

    async def _intruder(self, link: Link, kind: str, user: str) -> None:
        end = link.member_end
        try:
            if kind == "garbage":
                end.send_nowait(b'{"type": "hello", "protocol": ')
            else:
                claimed = "mallory" if kind == "unknown-user" else user
                hello = pr.Hello(protocol=pr.PROTOCOL_VERSION, room=self.room, user_id=claimed)
                end.send_nowait(pr.encode(hello))
            while True:
                message = pr.decode_host_message(await asyncio.wait_for(end.recv(), PATIENCE))
                if isinstance(message, pr.Challenge):
                    end.send_nowait(self._answer(kind, user, message.nonce))
                elif isinstance(message, (pr.Welcome, pr.Relay)):
                    self.welcomed.append(f"a {kind} intruder as {user!r} on link {link.number}")
                    return
        except (ConnectionClosed, TimeoutError, pr.MessageError):
            return
        finally:
            await end.close()

    def _answer(self, kind: str, user: str, nonce: str) -> bytes:
        if kind == "replayed" and self.network.overheard:
            return self.rng.choice(self.network.overheard)
        forged = insecure_key("mallory").sign(pr.challenge_bytes(self.room.room_id, user, nonce))
        return pr.encode(pr.Answer(signature=base64.b64encode(forged).decode()))

    def forge(self, link: Link, user: str) -> None:
        """Send, as ``user`` on its live ``link``, a report it would never send."""
        others = sorted(set(self.room.users) - {user})
        if others and self.rng.random() < 0.5:
            event = ev.PieceStarted(
                at=0.0, user_id=self.rng.choice(others), piece=self.room.piece_keys()[0]
            )
        else:
            event = ev.PieceStarted(at=0.0, user_id=user, piece="chars/not-in-room")
        try:
            link.member_end.send_nowait(pr.encode(pr.Report(event=event)))
        except ConnectionClosed:
            return
        link.injected += 1
