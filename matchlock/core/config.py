"""The two config files: the match-lock config and the room config (pydantic v2, frozen, strict).

A **match-lock config** lists piece collections; each piece carries the sha256 and size of what is
downloaded, how it unpacks, and its ordered resolvables; or, for content that exists only
unpacked, the digest and size of its folder (``folder_sha256``, ``folder_size``), and no
resolvables (only a room member who holds it can give it). A **room config** names the room, the
piece restrictions, the pieces every member must have, the users expected with their Ed25519
public keys, and every user's signature over the rest (see :mod:`matchlock.core.signing`).

This module is part of the core: it parses bytes and never touches files, sockets or the clock.
Parsing reports *every* problem at once, each with its JSON path and the offending value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from matchlock.core.errors import ConfigError, Problem

__all__ = [
    "MAX_EXACT_INTEGER",
    "MAX_NAME_LENGTH",
    "Collection",
    "MatchLockConfig",
    "Piece",
    "PieceKey",
    "PinnedPiece",
    "Resolvable",
    "Restrictions",
    "RoomConfig",
    "RoomSource",
    "RoomUser",
    "is_safe_name",
    "parse_matchlock_config",
    "parse_room_config",
    "piece_key",
    "split_piece_key",
]

MAX_NAME_LENGTH = 64
"""Longest collection, piece, room or user id accepted."""

MAX_EXACT_INTEGER = 2**53 - 1
"""Largest size or limit accepted. Beyond it, RFC 8785 (JCS) and JSON readers in other languages
write or read a rounded IEEE double, so the canonical form could not be reproduced."""

ByteCount = Annotated[int, Field(ge=0, le=MAX_EXACT_INTEGER)]
"""A size or a limit in bytes (or a count)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_DEVICE_STEMS = frozenset({"con", "prn", "aux", "nul", "com", "lpt"})
"""The first three letters of every name :data:`_WINDOWS_DEVICES` matches, lowercased."""


def _no_double_dot(value: str) -> str:
    """Refuse what could escape a folder or is no folder name on every platform."""
    if ".." in value:
        raise ValueError("must not contain '..'")
    if value.endswith("."):
        raise ValueError("must not end with '.' (Windows drops it)")
    # Every name of a room config passes here, each time one is decoded: the regular expression
    # runs only for a name whose first three letters could start a device name.
    if value[:3].lower() in _DEVICE_STEMS and _WINDOWS_DEVICES.match(value):
        raise ValueError("is a device name on Windows (CON, NUL, COM1 ...)")
    return value


def _no_case_twins(names: Mapping[str, object]) -> None:
    """Ids that differ only in case would share a folder on Windows and macOS."""
    seen: dict[str, str] = {}
    for name in names:
        twin = seen.setdefault(name.casefold(), name)
        if twin != name:
            raise ValueError(f"{twin!r} and {name!r} differ only in case")


SafeName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=_SAFE_NAME.pattern),
    AfterValidator(_no_double_dot),
    Field(description="Letters, digits, '_', '-', '.'; not starting with '.' or '-'; no '..'."),
]
"""An id that is safe as a folder name on every platform: it can never escape its parent."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A sha256 digest as 64 lowercase hex digits."""

PieceKey = Annotated[
    str,
    StringConstraints(
        max_length=2 * MAX_NAME_LENGTH + 1,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*/[A-Za-z0-9_][A-Za-z0-9_.\-]*$",
    ),
    AfterValidator(_no_double_dot),
]
"""A piece addressed as ``collection/piece`` (two safe names)."""

Scheme = Literal["http", "https", "file"]
"""A resolvable scheme a config may name, written here once: part of the signed format."""
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
"""Every :data:`Scheme`, in order; each is served by a resolver in
``matchlock.downloads.resolvers`` (a test checks that none lacks one)."""


def is_safe_name(value: str) -> bool:
    """True when ``value`` is a safe collection, piece, room or user id."""
    if not 0 < len(value) <= MAX_NAME_LENGTH or _SAFE_NAME.match(value) is None:
        return False
    try:
        _no_double_dot(value)
    except ValueError:
        return False
    return True


def piece_key(collection: str, piece: str) -> PieceKey:
    """The ``collection/piece`` address of a piece."""
    return f"{collection}/{piece}"


def split_piece_key(key: str) -> tuple[str, str]:
    """Split ``collection/piece``; raises ``ValueError`` naming the key when it is not one."""
    collection, sep, piece = key.partition("/")
    if not sep or not is_safe_name(collection) or not is_safe_name(piece):
        raise ValueError(f"{key!r} is not a piece address of the form collection/piece")
    return collection, piece


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class Resolvable(_Model):
    """One way to obtain a piece: an ``http``, ``https`` or ``file`` URL."""

    url: Annotated[str, StringConstraints(min_length=1, max_length=4096)]

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
        if scheme != "file" and not urlsplit(url).hostname:
            raise ValueError("an http(s) URL needs a host")
        return url

    @property
    def scheme(self) -> Scheme:
        """The URL's scheme (``http``, ``https`` or ``file``)."""
        scheme = urlsplit(self.url).scheme
        assert scheme in SCHEMES  # checked by the validator
        return scheme


def _is_none(value: object) -> bool:
    return value is None


_UNSET_LEFT_OUT = Field(exclude_if=_is_none)
"""A field added after the first version of a signed format: left out when unset, never null."""

_SHA256_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_COUNT_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_EXACT_INTEGER}
_OptionalSha256 = Annotated[Sha256Hex | None, WithJsonSchema(_SHA256_SCHEMA), _UNSET_LEFT_OUT]
_OptionalCount = Annotated[ByteCount | None, WithJsonSchema(_COUNT_SCHEMA), _UNSET_LEFT_OUT]


class _Pins(_Model):
    """The two ways content is pinned, shared by :class:`Piece` and :class:`PinnedPiece`: the
    archive (``sha256``, ``size``: what is downloaded) and the folder (``folder_sha256``, the
    folder digest of ``docs/folder-digest.md``; ``folder_size``, the sum of its files' sizes)."""

    # An unset pair is left out of every serialized form (so content pinned as before
    # serializes, and signs, as before), and the schema shows each as a value to give or leave
    # out: a pair is never written as null.
    sha256: _OptionalSha256 = None
    size: _OptionalCount = None
    folder_sha256: _OptionalSha256 = None
    folder_size: _OptionalCount = None

    @property
    def archive(self) -> tuple[str, int] | None:
        """``(sha256, size)`` of the archive, or None when only the folder is pinned."""
        if self.sha256 is None or self.size is None:
            return None
        return self.sha256, self.size

    @property
    def folder(self) -> tuple[str, int] | None:
        """``(folder_sha256, folder_size)``, or None when the folder pair is not given."""
        if self.folder_sha256 is None or self.folder_size is None:
            return None
        return self.folder_sha256, self.folder_size

    @property
    def content_digest(self) -> str:
        """What names this content (its cache folder, its lock, its fingerprint line): the
        archive's sha256, or the folder digest when no archive is pinned."""
        digest = self.sha256 if self.sha256 is not None else self.folder_sha256
        assert digest is not None  # at least one pair: checked by the validator
        return digest

    @property
    def content_size(self) -> int:
        """The bytes a member's progress counts up to: the archive's size, or the folder's
        (the sum of its files' sizes) when no archive is pinned."""
        size = self.size if self.size is not None else self.folder_size
        assert size is not None  # at least one pair: checked by the validator
        return size

    def _pair_problem(self, *, folder_pair: bool) -> str | None:
        if (self.sha256 is None) != (self.size is None):
            return "sha256 and size go together: give both or neither"
        if folder_pair and (self.folder_sha256 is None) != (self.folder_size is None):
            return "folder_sha256 and folder_size go together: give both or neither"
        if self.sha256 is None and self.folder is None:
            return (
                "pin the archive (sha256 and size), the folder (folder_sha256 and "
                "folder_size), or both"
            )
        return None


_PAIRS_SCHEMA: dict[str, Any] = {
    "dependentRequired": {
        "sha256": ["size"],
        "size": ["sha256"],
        "folder_size": ["folder_sha256"],
    },
    "anyOf": [{"required": ["sha256"]}, {"required": ["folder_sha256", "folder_size"]}],
    "if": {"not": {"required": ["sha256"]}},
    "then": {
        "properties": {"resolvables": {"maxItems": 0}, "unpack": {"const": "none"}},
        "not": {"required": ["filename"]},
    },
}
"""What the pair rules of :class:`Piece` say in JSON Schema (``folder_sha256`` may stand alone
beside an archive; a folder-only piece has no resolvables, no filename, no unpack)."""

_PINNED_SCHEMA: dict[str, Any] = {
    "dependentRequired": {
        "sha256": ["size"],
        "size": ["sha256"],
        "folder_sha256": ["folder_size"],
        "folder_size": ["folder_sha256"],
    },
    "anyOf": [{"required": ["sha256"]}, {"required": ["folder_sha256"]}],
}
"""What the pair rules of :class:`PinnedPiece` say in JSON Schema."""


class Piece(_Pins):
    """One unit of content and how to get it.

    ``sha256`` and ``size`` describe the downloaded file. ``unpack`` is ``zip``, ``tar`` (any
    compression :mod:`tarfile` reads) or ``none`` (the folder holds the one file, named
    ``filename`` or after the URL's last segment). ``folder_sha256`` is the digest of the installed
    folder (:func:`matchlock.downloads.folder_digest.folder_digest`), used to trust a folder that
    already exists in the game's files, and ``folder_size`` the sum of its files' sizes.

    A piece with an archive may give ``folder_sha256`` alone (as configs did before
    ``folder_size`` existed). A **folder-only** piece (no ``sha256``) gives both folder fields,
    no ``filename``, ``unpack`` ``none`` and no resolvables: it is here when a game folder or the
    cache holds a folder with that digest, and otherwise only a room member can give it.
    ``resolvables`` may be empty for any piece (then only the room can give it).
    """

    model_config = ConfigDict(json_schema_extra=_PAIRS_SCHEMA)

    unpack: Literal["zip", "tar", "none"] = "none"
    filename: SafeName | None = None
    resolvables: tuple[Resolvable, ...] = ()

    @model_validator(mode="after")
    def _pinned(self) -> Piece:
        # folder_sha256 alone is how configs trusted a game folder before folder_size existed.
        problem = self._pair_problem(
            folder_pair=self.sha256 is None or self.folder_size is not None
        )
        if problem is None and self.sha256 is None:
            if self.resolvables:
                problem = "a piece without an archive (no sha256) has no resolvables to download"
            elif self.filename is not None or self.unpack != "none":
                problem = "a piece without an archive (no sha256) takes no filename or unpack"
        if problem is not None:
            raise ValueError(problem)
        return self


class Collection(_Model):
    """A named group of pieces. ``engine_path`` is where the game keeps such a piece under its
    root, with ``{piece}`` standing for the piece id (for example ``chars/{piece}``)."""

    mandatory: bool = False
    engine_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    pieces: dict[SafeName, Piece]

    @field_validator("pieces")
    @classmethod
    def _distinct_pieces(cls, pieces: dict[str, Piece]) -> dict[str, Piece]:
        _no_case_twins(pieces)
        return pieces

    @field_validator("engine_path")
    @classmethod
    def _relative_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "\\")) or ".." in parts or ":" in value:
            raise ValueError("must be a relative path inside the engine root")
        if "{piece}" not in value:
            raise ValueError("must contain {piece}")
        return value


class MatchLockConfig(_Model):
    """The client's list of collections, pieces and resolvables."""

    collections: dict[SafeName, Collection]

    @field_validator("collections")
    @classmethod
    def _distinct_collections(cls, collections: dict[str, Collection]) -> dict[str, Collection]:
        _no_case_twins(collections)
        return collections

    def pieces(self, *, mandatory_only: bool = False) -> dict[PieceKey, Piece]:
        """Every piece by ``collection/piece``, in file order; only mandatory ones if asked."""
        return {
            piece_key(cname, pname): piece
            for cname, collection in self.collections.items()
            if collection.mandatory or not mandatory_only
            for pname, piece in collection.pieces.items()
        }

    def piece(self, key: PieceKey) -> Piece | None:
        """The piece at ``collection/piece``, or None when the config has no such piece."""
        collection, _, name = key.partition("/")
        found = self.collections.get(collection)
        return None if found is None else found.pieces.get(name)


RoomSource = Literal["first", "last", "never"]
"""Where the room's members come among a piece's sources: before every resolvable, after them
all, or not at all."""


class Restrictions(_Model):
    """What a room accepts: which collections, how many pieces, how large, from which schemes;
    and optionally where room members come among each piece's sources (``room_source``; unset:
    the joining member decides, ``last`` by default)."""

    allowed_collections: tuple[SafeName, ...]
    max_pieces: ByteCount
    max_piece_bytes: ByteCount
    max_total_bytes: ByteCount
    allowed_schemes: tuple[Scheme, ...] = ("https",)
    room_source: Annotated[RoomSource | None, _UNSET_LEFT_OUT] = None


class PinnedPiece(_Pins):
    """The exact content every member must end up with for one piece: what the downloaded file
    hashes to and its size (``sha256``, ``size``), or the folder digest and the sum of the
    folder's file sizes (``folder_sha256``, ``folder_size``), or both pairs. Signed with the
    rest of the room config, so members whose match-lock configs differ cannot both "finish" a
    piece with different bytes. Unset pairs are left out of every serialized form."""

    model_config = ConfigDict(json_schema_extra=_PINNED_SCHEMA)

    @model_validator(mode="after")
    def _pinned(self) -> PinnedPiece:
        problem = self._pair_problem(folder_pair=True)
        if problem is not None:
            raise ValueError(problem)
        return self


class RoomUser(_Model):
    """An expected user: the base64 of the raw 32-byte Ed25519 public key."""

    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]


class RoomConfig(_Model):
    """A room: its id, restrictions, the pieces every member must have, the users expected and
    their signatures over everything else (:func:`matchlock.core.signing.canonical_room_bytes`)."""

    room_id: SafeName
    restrictions: Restrictions
    pieces: dict[SafeName, tuple[SafeName, ...]]
    users: Annotated[dict[SafeName, RoomUser], Field(min_length=1)]
    content: dict[PieceKey, PinnedPiece]
    signatures: dict[str, str] = Field(default_factory=dict)

    @field_validator("pieces")
    @classmethod
    def _piece_ids(cls, pieces: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        _no_case_twins(pieces)
        for collection, names in pieces.items():
            if len({name.casefold() for name in names}) != len(names):
                raise ValueError(f"collection {collection!r} lists a piece twice")
        return pieces

    @field_validator("content")
    @classmethod
    def _content_covers_pieces(
        cls, content: dict[str, PinnedPiece], info: ValidationInfo
    ) -> dict[str, PinnedPiece]:
        pieces = info.data.get("pieces")
        if pieces is None:  # already reported as invalid
            return content
        expected = {piece_key(c, p) for c, names in pieces.items() for p in names}
        missing, extra = sorted(expected - set(content)), sorted(set(content) - expected)
        if missing or extra:
            raise ValueError(
                f"must pin exactly the expected pieces (missing {missing}, extra {extra})"
            )
        return content

    def piece_keys(self) -> list[PieceKey]:
        """Every expected piece as ``collection/piece``, in file order."""
        return [piece_key(c, p) for c, names in self.pieces.items() for p in names]


_M = TypeVar("_M", bound=BaseModel)


def _render(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if value is not None else "null"
    return text if len(text) <= 80 else text[:77] + "..."


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif is_safe_name(part) or part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _input_loc(loc: tuple[int | str, ...], document: object) -> tuple[int | str, ...]:
    """``loc`` without the tags pydantic adds for a failing constraint (such as
    ``function-after[...]``): a part the input holds at that place is the input's, even one with
    a ``[`` in it (a key ``chars[1]``)."""
    kept: list[int | str] = []
    node: Any = document
    for part in loc:
        if _holds(node, part):
            node = node[part]
        elif isinstance(part, str) and "[" in part:
            continue
        else:
            node = None
        kept.append(part)
    return tuple(kept)


def _holds(node: object, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _problems(error: ValidationError, data: bytes | str) -> list[Problem]:
    try:  # where only values broke the schema: to tell the input's keys from pydantic's tags
        document: object = json.loads(data)
    except ValueError:  # not JSON as Python reads it (invalid UTF-8 among them)
        document = None
    problems = []
    for item in error.errors(include_url=False):
        loc = _input_loc(item["loc"], document)
        shown = "" if item["type"] == "missing" else _render(item.get("input"))
        problems.append(Problem(_json_path(loc), item["msg"], shown))
    return problems


def parse_model(model: type[_M], data: bytes | str, source: str) -> _M:
    """Parse JSON ``data`` into ``model``; raise :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        if error.errors()[0]["type"] == "json_invalid":
            raw = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            try:
                json.loads(raw)
            except json.JSONDecodeError as bad:
                where = Problem(
                    "$", f"not valid JSON: {bad.msg} at line {bad.lineno} column {bad.colno}"
                )
                raise ConfigError(source, [where]) from None
        raise ConfigError(source, _problems(error, data)) from None


def parse_matchlock_config(data: bytes | str, source: str = "match-lock config") -> MatchLockConfig:
    """Parse a match-lock config from JSON bytes; ``source`` names it in errors."""
    return parse_model(MatchLockConfig, data, source)


def parse_room_config(data: bytes | str, source: str = "room config") -> RoomConfig:
    """Parse a room config from JSON bytes; ``source`` names it in errors."""
    return parse_model(RoomConfig, data, source)
