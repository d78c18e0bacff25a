"""matchlock: every player in a match gets exactly the same content before it starts.

The public API, by job (each name is documented where it is defined):

- configs: :class:`MatchLockConfig`, :class:`RoomConfig` and their parts; parse them from bytes
  (:func:`parse_matchlock_config`, :func:`parse_room_config`) or files
  (:func:`load_matchlock_config`, :func:`load_room_config`); build a room (:func:`new_room`).
- keys and signatures: :func:`generate_key`, :func:`save_keypair`, :func:`load_private_key`,
  :func:`load_public_key`, :func:`sign_room`, :func:`verify_room`, :func:`check_room`,
  signing in parallel (:func:`detached_signature`, :func:`add_signature`, :func:`merge_signed`),
  :func:`canonical_room_bytes`; :func:`folder_digest` (and :func:`folder_pin`, the pin of a
  folder-only piece).
- downloads without a room: :func:`download` (and :func:`download_sync`); the shared cache
  (:func:`default_cache_dir`, :func:`list_cache`, :func:`verify_cache`, :func:`collect_garbage`,
  :func:`record_cache_use`).
- the content fingerprint a game compares (:func:`content_fingerprint`,
  :func:`pieces_fingerprint`); Ikemen GO's arguments and ``select.def`` lines
  (:func:`ikemen_match`, :func:`write_select`).
- before joining: where each piece will come from (:func:`plan_room`, :func:`plan_room_sync`,
  a :class:`Plan`).
- rooms: :func:`join` a room (or :func:`join_events`, its events as an ``async for``); host
  rooms with :class:`RoomHost` and :func:`listen`; the rooms hosts on the local network announce
  (:func:`list_lan_rooms`); the sans-IO cores :class:`HostProtocol` and :class:`ClientProtocol`
  for other transports.
- events, state and logs: :data:`Event` (``matchlock.core.events``), :func:`replay`,
  :class:`RoomState`, :class:`EventLog`, :func:`read_events`, :func:`replay_file`;
  the machines :data:`PIECE`, :data:`MEMBER`, :data:`ROOM`.
- debugging and testing: :func:`timeline_html`, :func:`simulate`.
- errors: :class:`MatchlockError` and its tree (:mod:`matchlock.core.errors`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from matchlock._version import __version__

if TYPE_CHECKING:
    from matchlock.app.configfile import load_matchlock_config, load_room_config, write_room_config
    from matchlock.app.hosting import RoomHost
    from matchlock.app.ikemen import IkemenMatch, ikemen_match, write_select
    from matchlock.app.joining import join
    from matchlock.app.keys import generate_key, load_private_key, load_public_key, save_keypair
    from matchlock.app.plan import Plan, plan_room, plan_room_sync
    from matchlock.app.roomevents import join_events
    from matchlock.core.client import ClientProtocol
    from matchlock.core.config import (
        Collection,
        MatchLockConfig,
        Piece,
        PinnedPiece,
        Resolvable,
        Restrictions,
        RoomConfig,
        RoomUser,
        parse_matchlock_config,
        parse_room_config,
    )
    from matchlock.core.errors import (
        ConfigError,
        HostFailedError,
        IllegalEventError,
        InputError,
        JoinRefusedError,
        LogCorruptError,
        LogError,
        LogWriteError,
        MatchlockError,
        RestrictionError,
        RoomIncompleteError,
        SignatureError,
        UsageError,
    )
    from matchlock.core.events import Event
    from matchlock.core.fingerprint import Fingerprint, content_fingerprint, pieces_fingerprint
    from matchlock.core.fitting import check_room
    from matchlock.core.host import HostProtocol
    from matchlock.core.machines import MEMBER, PIECE, ROOM
    from matchlock.core.room import RoomState, replay
    from matchlock.core.roomconfig import new_room
    from matchlock.core.signing import (
        add_signature,
        canonical_room_bytes,
        detached_signature,
        merge_signed,
        sign_room,
        verify_room,
    )
    from matchlock.downloads import DownloadError, download, download_sync
    from matchlock.downloads.folder_digest import folder_digest
    from matchlock.downloads.folder_stream import folder_pin
    from matchlock.downloads.manage import (
        collect_garbage,
        default_cache_dir,
        list_cache,
        record_cache_use,
        verify_cache,
    )
    from matchlock.store.eventlog import EventLog, read_events, replay_file
    from matchlock.tools.sim import simulate
    from matchlock.tools.timeline import timeline_html
    from matchlock.transport.connect import listen, open_connection
    from matchlock.transport.discovery import list_lan_rooms

_WHERE: dict[str, str] = {
    "ClientProtocol": "matchlock.core.client",
    "Collection": "matchlock.core.config",
    "MatchLockConfig": "matchlock.core.config",
    "Piece": "matchlock.core.config",
    "PinnedPiece": "matchlock.core.config",
    "Resolvable": "matchlock.core.config",
    "Restrictions": "matchlock.core.config",
    "RoomConfig": "matchlock.core.config",
    "RoomUser": "matchlock.core.config",
    "parse_matchlock_config": "matchlock.core.config",
    "parse_room_config": "matchlock.core.config",
    "load_matchlock_config": "matchlock.app.configfile",
    "load_room_config": "matchlock.app.configfile",
    "write_room_config": "matchlock.app.configfile",
    "DownloadError": "matchlock.downloads",
    "download": "matchlock.downloads",
    "download_sync": "matchlock.downloads",
    "collect_garbage": "matchlock.downloads.manage",
    "default_cache_dir": "matchlock.downloads.manage",
    "list_cache": "matchlock.downloads.manage",
    "record_cache_use": "matchlock.downloads.manage",
    "verify_cache": "matchlock.downloads.manage",
    "ConfigError": "matchlock.core.errors",
    "HostFailedError": "matchlock.core.errors",
    "IllegalEventError": "matchlock.core.errors",
    "InputError": "matchlock.core.errors",
    "JoinRefusedError": "matchlock.core.errors",
    "LogCorruptError": "matchlock.core.errors",
    "LogError": "matchlock.core.errors",
    "LogWriteError": "matchlock.core.errors",
    "MatchlockError": "matchlock.core.errors",
    "RestrictionError": "matchlock.core.errors",
    "RoomIncompleteError": "matchlock.core.errors",
    "SignatureError": "matchlock.core.errors",
    "UsageError": "matchlock.core.errors",
    "EventLog": "matchlock.store.eventlog",
    "read_events": "matchlock.store.eventlog",
    "replay_file": "matchlock.store.eventlog",
    "Event": "matchlock.core.events",
    "Fingerprint": "matchlock.core.fingerprint",
    "content_fingerprint": "matchlock.core.fingerprint",
    "pieces_fingerprint": "matchlock.core.fingerprint",
    "folder_digest": "matchlock.downloads.folder_digest",
    "folder_pin": "matchlock.downloads.folder_stream",
    "Plan": "matchlock.app.plan",
    "plan_room": "matchlock.app.plan",
    "plan_room_sync": "matchlock.app.plan",
    "HostProtocol": "matchlock.core.host",
    "RoomHost": "matchlock.app.hosting",
    "IkemenMatch": "matchlock.app.ikemen",
    "ikemen_match": "matchlock.app.ikemen",
    "write_select": "matchlock.app.ikemen",
    "join": "matchlock.app.joining",
    "join_events": "matchlock.app.roomevents",
    "generate_key": "matchlock.app.keys",
    "load_private_key": "matchlock.app.keys",
    "load_public_key": "matchlock.app.keys",
    "save_keypair": "matchlock.app.keys",
    "MEMBER": "matchlock.core.machines",
    "PIECE": "matchlock.core.machines",
    "ROOM": "matchlock.core.machines",
    "RoomState": "matchlock.core.room",
    "replay": "matchlock.core.room",
    "new_room": "matchlock.core.roomconfig",
    "add_signature": "matchlock.core.signing",
    "canonical_room_bytes": "matchlock.core.signing",
    "check_room": "matchlock.core.fitting",
    "detached_signature": "matchlock.core.signing",
    "merge_signed": "matchlock.core.signing",
    "sign_room": "matchlock.core.signing",
    "verify_room": "matchlock.core.signing",
    "simulate": "matchlock.tools.sim",
    "timeline_html": "matchlock.tools.timeline",
    "listen": "matchlock.transport.connect",
    "open_connection": "matchlock.transport.connect",
    "list_lan_rooms": "matchlock.transport.discovery",
}
"""Where each public name lives. Names load on first use, so ``import matchlock`` (and a light
command such as ``matchlock keygen``) does not pay for the HTTP client, the transports and the
rest."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'matchlock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "MEMBER",
    "PIECE",
    "ROOM",
    "ClientProtocol",
    "Collection",
    "ConfigError",
    "DownloadError",
    "Event",
    "EventLog",
    "Fingerprint",
    "HostFailedError",
    "HostProtocol",
    "IkemenMatch",
    "IllegalEventError",
    "InputError",
    "JoinRefusedError",
    "LogCorruptError",
    "LogError",
    "LogWriteError",
    "MatchLockConfig",
    "MatchlockError",
    "Piece",
    "PinnedPiece",
    "Plan",
    "Resolvable",
    "RestrictionError",
    "Restrictions",
    "RoomConfig",
    "RoomHost",
    "RoomIncompleteError",
    "RoomState",
    "RoomUser",
    "SignatureError",
    "UsageError",
    "__version__",
    "add_signature",
    "canonical_room_bytes",
    "check_room",
    "collect_garbage",
    "content_fingerprint",
    "default_cache_dir",
    "detached_signature",
    "download",
    "download_sync",
    "folder_digest",
    "folder_pin",
    "generate_key",
    "ikemen_match",
    "join",
    "join_events",
    "list_cache",
    "list_lan_rooms",
    "listen",
    "load_matchlock_config",
    "load_private_key",
    "load_public_key",
    "load_room_config",
    "merge_signed",
    "new_room",
    "open_connection",
    "parse_matchlock_config",
    "parse_room_config",
    "pieces_fingerprint",
    "plan_room",
    "plan_room_sync",
    "read_events",
    "record_cache_use",
    "replay",
    "replay_file",
    "save_keypair",
    "sign_room",
    "simulate",
    "timeline_html",
    "verify_cache",
    "verify_room",
    "write_room_config",
    "write_select",
]
