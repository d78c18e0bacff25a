"""Starting an Ikemen GO match on exactly a room's folders: command-line arguments and
``select.def`` lines, from a room's ``piece -> folder`` result.

What Ikemen GO accepts (read in its public source: ``src/main.go``, ``processCommandLine``;
``external/script/main.lua``, ``main.f_commandLine`` and the ``select.def`` reader;
``src/system.go``, ``Select.addChar`` and ``Select.AddStage``):

- quick versus from the command line: ``-p1 CHAR -p2 CHAR`` (both needed; ``-p3`` ... for more
  players) and ``-s STAGE``. A character is a path to its ``.def`` file (``chars/kfm/kfm.def``,
  or an absolute path, which is used as is); a stage is the path of its ``.def`` file, tried as
  given before ``stages/`` is put in front; ``-ip ADDRESS`` plays that match over netplay,
  connecting to ADDRESS on the configured listen port, and ``-ip`` with an empty value waits
  for the other player instead (``enterNetPlay`` in ``src/script.go``);
- ``select.def`` lists characters by path, one per line, in its ``[Characters]`` section, and
  stages in ``[ExtraStages]``; ``,`` separates a line's parameters and ``;`` starts a comment,
  so a path holding either cannot be listed there.

:func:`ikemen_match` finds each character's and stage's ``.def`` in its folder;
:meth:`IkemenMatch.arguments` gives the arguments for one match and :meth:`IkemenMatch.select_lines`
the lines to list every piece. Nothing here writes into the game's files:
:func:`write_select` edits a ``select.def`` only when the caller asks, keeps a backup, and
replaces its own block (between ``; matchlock: begin`` and ``; matchlock: end``) on every run,
so running it again never piles up entries. Shell module: it reads folders and one file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matchlock.core.errors import InputError, UsageError
from matchlock.store.files import write_file_atomically

__all__ = [
    "BLOCK_BEGIN",
    "BLOCK_END",
    "IkemenMatch",
    "find_def",
    "ikemen_match",
    "merge_select",
    "write_select",
]

BLOCK_BEGIN = "; matchlock: begin"
"""The comment line that opens matchlock's block in a section of ``select.def``."""
BLOCK_END = "; matchlock: end"
"""The comment line that closes it."""

_SECTION = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]")
_NOT_IN_SELECT = re.compile(r"[,;\r\n]")


def find_def(folder: Path, piece_id: str) -> Path:
    """The ``.def`` file of the character or stage installed in ``folder``.

    ``<piece>.def`` at the top (letter case ignored, as Ikemen GO does), else the only ``.def``
    at the top, else the same inside the folder's only sub-folder (an archive that holds a
    ``kfm/`` folder). Raises :class:`InputError` listing what was found otherwise.
    """
    level = folder
    for _ in range(2):
        try:
            entries = sorted(os.scandir(level), key=lambda e: e.name)
        except OSError as error:
            raise InputError(f"{folder}: cannot read the folder: {error.strerror}") from None
        defs = [e for e in entries if e.is_file() and e.name.lower().endswith(".def")]
        named = [e for e in defs if e.name.lower() == f"{piece_id.lower()}.def"]
        if named or len(defs) == 1:
            return Path((named or defs)[0].path)
        folders = [e for e in entries if e.is_dir()]
        if defs or len(folders) != 1:
            shown = ", ".join(e.name for e in defs) or "none"
            raise InputError(
                f"{folder}: no {piece_id}.def and not exactly one .def file (found: {shown}); "
                f"name the file with --def {piece_id}=FILE"
            )
        level = Path(folders[0].path)
    raise InputError(f"{folder}: no .def file in it or in its only sub-folder")


def _ikemen_path(path: Path) -> str:
    """A path as Ikemen GO reads it: absolute, with ``/`` (it turns ``\\`` into ``/`` itself)."""
    return path.absolute().as_posix()


@dataclass(frozen=True)
class IkemenMatch:
    """The ``.def`` path of every character and stage of a room's result, by piece key, in the
    result's order; ``others`` are the pieces that are neither (music, screenpacks)."""

    characters: dict[str, str]
    stages: dict[str, str]
    others: tuple[str, ...]

    def arguments(
        self,
        players: Sequence[str] | None = None,
        stage: str | None = None,
        fingerprint: str | None = None,
        netplay: str | None = None,
    ) -> list[str]:
        """``-p1 DEF -p2 DEF ... [-s DEF]`` for a quick-versus match between ``players``
        (piece keys, in player order; default: the first two characters, or the only one
        twice), on ``stage`` (default: the first stage, if any). With ``fingerprint``,
        ``-contentfingerprint VALUE`` too (for a patched Ikemen GO, see docs/ikemen-go.md).
        With ``netplay``, ``-ip netplay``: the address of the hosting player, or ``""`` to host.
        Raises :class:`UsageError` naming a key that is not a character or stage of the room.
        """
        chosen = list(players) if players else list(self.characters)[:2]
        if len(chosen) == 1:
            chosen *= 2
        if len(chosen) < 2:
            raise UsageError("a match needs two characters and the room has none")
        arguments = []
        for number, key in enumerate(chosen, start=1):
            if key not in self.characters:
                raise UsageError(f"{key} is not a character of this room: {self._known()}")
            arguments += [f"-p{number}", self.characters[key]]
        stage = stage or next(iter(self.stages), None)
        if stage is not None:
            if stage not in self.stages:
                raise UsageError(f"{stage} is not a stage of this room: {self._known()}")
            arguments += ["-s", self.stages[stage]]
        if fingerprint is not None:
            arguments += ["-contentfingerprint", fingerprint]
        if netplay is not None:
            arguments += ["-ip", netplay]
        return arguments

    def _known(self) -> str:
        return (
            f"characters {', '.join(self.characters) or 'none'}; "
            f"stages {', '.join(self.stages) or 'none'}"
        )

    def select_lines(self) -> tuple[list[str], list[str]]:
        """The ``[Characters]`` lines and the ``[ExtraStages]`` lines that list every piece.

        Raises :class:`InputError` naming a piece whose path holds ``,`` ``;`` or a line break,
        which ``select.def`` cannot carry (point ``--dest`` at a folder without them).
        """
        for key, path in {**self.characters, **self.stages}.items():
            if _NOT_IN_SELECT.search(path):
                raise InputError(
                    f"{key}: its path {path!r} holds ',' ';' or a line break, which select.def "
                    "cannot list; use a cache folder whose path has none"
                )
        return list(self.characters.values()), list(self.stages.values())


def ikemen_match(
    folders: Mapping[str, str | os.PathLike[str]],
    *,
    characters: Sequence[str] = ("chars",),
    stages: Sequence[str] = ("stages",),
    defs: Mapping[str, str] | None = None,
) -> IkemenMatch:
    """What Ikemen GO needs from a room's result ``folders`` (``collection/piece -> folder``):
    pieces of the collections ``characters`` are characters, of ``stages`` stages.

    ``defs`` names the ``.def`` file of a piece inside its folder (``{"chars/kfm":
    "kfm720.def"}``) when :func:`find_def` cannot choose. Raises :class:`InputError` naming
    the piece whose ``.def`` cannot be found.
    """
    found: dict[str, dict[str, str]] = {"character": {}, "stage": {}}
    others = []
    for key, given in folders.items():
        collection, _, piece_id = key.partition("/")
        kind = (
            "character" if collection in characters else "stage" if collection in stages else None
        )
        if kind is None:
            others.append(key)
            continue
        folder = Path(given)
        chosen = (defs or {}).get(key)
        path = folder / chosen if chosen is not None else find_def(folder, piece_id)
        if not path.is_file():
            raise InputError(f"{key}: {path} is not a file")
        found[kind][key] = _ikemen_path(path)
    return IkemenMatch(found["character"], found["stage"], tuple(others))


def _without_block(lines: list[str]) -> list[str]:
    kept, inside = [], False
    for line in lines:
        if line.strip() == BLOCK_BEGIN:
            inside = True
        elif line.strip() == BLOCK_END and inside:
            inside = False
        elif not inside:
            kept.append(line)
    return kept


def _insert_block(lines: list[str], section: str, block: list[str]) -> list[str]:
    """``block`` at the end of ``[section]`` (after its last line that is not blank), or a new
    section at the end when the file has none."""
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if (m := _SECTION.match(line)) and m[1].lower() == section.lower()
        ),
        None,
    )
    if start is None:
        return [*lines, "", f"[{section}]", *block]
    end = next((i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return [*lines[:end], *block, *lines[end:]]


def merge_select(text: str, characters: list[str], stages: list[str], note: str) -> str:
    """``text`` (a ``select.def``) with matchlock's block of ``characters`` at the end of
    ``[Characters]`` and of ``stages`` at the end of ``[ExtraStages]``, replacing the blocks a
    previous run added; ``note`` (one line: the room, its fingerprint) heads each block. Line
    endings (``\\r\\n`` or ``\\n``) are kept as the file has them."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = _without_block(text.splitlines())
    heading = [BLOCK_BEGIN, f"; {note}"]
    if characters:
        lines = _insert_block(lines, "Characters", [*heading, *characters, BLOCK_END])
    if stages:
        lines = _insert_block(lines, "ExtraStages", [*heading, *stages, BLOCK_END])
    return newline.join(lines) + newline


def write_select(path: Path, match: IkemenMatch, note: str) -> Path:
    """Add ``match``'s pieces to the ``select.def`` at ``path`` (see :func:`merge_select`),
    after copying the file as it was to ``path.bak``; returns the backup's path. The file is
    replaced atomically. Raises :class:`InputError` when ``path`` cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read the select.def: {error.strerror}") from None
    characters, stages = match.select_lines()
    text = merge_select(raw.decode("utf-8", "surrogateescape"), characters, stages, note)
    backup = path.with_name(path.name + ".bak")
    write_file_atomically(backup, raw)
    write_file_atomically(path, text.encode("utf-8", "surrogateescape"))
    return backup
