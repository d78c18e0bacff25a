"""Unpacking archives: good ones land whole, hostile ones are refused before they escape."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchlock.core.events import Event, ResolvableFailed
from matchlock.downloads import ArchiveError, DownloadError, UnpackLimits, download
from matchlock.downloads.unpack import unpack_archive
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece, tar_bytes, zip_bytes


def unpack(tmp_path: Path, data: bytes, kind: str, limits: UnpackLimits | None = None) -> Path:
    archive = tmp_path / f"archive.{kind}"
    archive.write_bytes(data)
    into = tmp_path / "into"
    into.mkdir()
    unpack_archive(archive, kind, into, limits or UnpackLimits())  # type: ignore[arg-type]
    return into


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


FILES = {"kfm.def": b"[Info]\nname = kfm\n", "sprites/kfm.sff": os.urandom(5000), "empty.txt": b""}


@pytest.mark.parametrize(
    "data",
    [zip_bytes(FILES), tar_bytes(FILES), tar_bytes(FILES, "w"), tar_bytes(FILES, "w:xz")],
    ids=["zip", "tar.gz", "tar", "tar.xz"],
)
def test_archives_unpack_whole(tmp_path: Path, data: bytes) -> None:
    kind = "zip" if data.startswith(b"PK") else "tar"
    assert tree(unpack(tmp_path, data, kind)) == FILES


def zip_with(info: zipfile.ZipInfo, content: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fine.txt", b"fine")
        archive.writestr(info, content)
    return buffer.getvalue()


def zip_link(name: str, target: str) -> bytes:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return zip_with(info, target.encode())


@pytest.mark.parametrize(
    ("data", "member", "reason"),
    [
        (zip_bytes({"../evil.txt": b"x"}), "../evil.txt", "climbs out"),
        (zip_bytes({"a/../../evil.txt": b"x"}), "a/../../evil.txt", "climbs out"),
        (zip_bytes({"/abs.txt": b"x"}), "/abs.txt", "absolute"),
        (zip_bytes({"C:/evil.txt": b"x"}), "C:/evil.txt", "':'"),
        (zip_bytes({"a\\..\\..\\evil.txt": b"x"}), "a\\..\\..\\evil.txt", "backslash"),
        (zip_link("link", "/etc/passwd"), "link", "symbolic link"),
    ],
    ids=["slip", "nested-slip", "absolute", "drive", "backslash", "symlink"],
)
def test_hostile_zip_members_are_refused(
    tmp_path: Path, data: bytes, member: str, reason: str
) -> None:
    with pytest.raises(ArchiveError) as raised:
        unpack(tmp_path, data, "zip")
    assert raised.value.member == member
    assert reason in raised.value.reason
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "into" / "link").exists()


def tar_with(member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(member)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tar_member("link", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link"),
        (tar_member("hard", tarfile.LNKTYPE, "/etc/passwd"), "a hard link"),
        (tar_member("dev", tarfile.CHRTYPE), "a device"),
        (tar_member("fifo", tarfile.FIFOTYPE), "a FIFO"),
        (tar_member("../up", tarfile.DIRTYPE), "climbs out"),
        (tar_member("/etc/cron.d", tarfile.DIRTYPE), "absolute"),
    ],
    ids=["symlink", "hardlink", "device", "fifo", "slip-dir", "absolute-dir"],
)
def test_hostile_tar_members_are_refused(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    with pytest.raises(ArchiveError) as raised:
        unpack(tmp_path, tar_with(member), "tar")
    assert reason in raised.value.reason
    assert list((tmp_path / "into").iterdir()) == []


def test_a_zip_bomb_stops_at_the_byte_budget(tmp_path: Path) -> None:
    bomb = zip_bytes({"zeros.bin": bytes(80 * 1024 * 1024)})
    assert len(bomb) < 200_000
    with pytest.raises(ArchiveError) as raised:
        unpack(tmp_path, bomb, "zip")
    assert "more than 67108864" in raised.value.reason
    assert list((tmp_path / "into").iterdir()) == []


def test_a_zip_bomb_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    bomb = bytearray(zip_bytes({"zeros.bin": bytes(80 * 1024 * 1024)}))
    central = bomb.index(b"PK\x01\x02")
    struct.pack_into("<I", bomb, central + 24, 1000)  # claim 1,000 bytes uncompressed
    with pytest.raises(ArchiveError):
        unpack(tmp_path, bytes(bomb), "zip")
    written = sum(p.stat().st_size for p in (tmp_path / "into").rglob("*"))
    assert written <= 1024 * 1024


def test_the_budget_counts_bytes_written_not_bytes_claimed(tmp_path: Path) -> None:
    data = tar_bytes({"a.bin": bytes(3 * 1024 * 1024)})  # tar sizes are claimed per member
    limits = UnpackLimits(max_bytes=2 * 1024 * 1024)
    with pytest.raises(ArchiveError, match="more than 2097152 bytes"):
        unpack(tmp_path, data, "tar", limits)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_members_are_refused(tmp_path: Path, kind: str) -> None:
    files = {f"f{i}.txt": b"" for i in range(11)}
    data = zip_bytes(files) if kind == "zip" else tar_bytes(files)
    with pytest.raises(ArchiveError, match="more than 10"):
        unpack(tmp_path, data, kind, UnpackLimits(max_members=10))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_two_members_on_one_path_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"first")
        archive.writestr("a.txt", b"second")
    with pytest.raises(ArchiveError, match="same path"):
        unpack(tmp_path, buffer.getvalue(), "zip")


def test_something_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        unpack(tmp_path, b"not a zip at all", "zip")


async def test_a_refused_archive_fails_its_piece_without_trying_other_mirrors(
    server: ContentServer, tmp_path: Path
) -> None:
    data = zip_bytes({"../evil.txt": b"x"})
    server.add("evil", data)
    events: list[Event] = []
    pieces = {
        "chars": {
            "pieces": {
                "evil": piece(
                    data, server.url("ok", "evil"), server.url("norange", "evil"), unpack="zip"
                )
            }
        }
    }
    with pytest.raises(DownloadError) as raised:
        await download(
            config(pieces), tmp_path / "cache", on_event=events.append, policy=FAST_POLICY
        )
    (failure,) = raised.value.failures["chars/evil"]
    assert "climbs out of the folder" in failure.reason
    assert [r.route for r in server.requests] == ["ok"]
    assert [e.failure for e in events if isinstance(e, ResolvableFailed)] == [failure]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".matchlock"]
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "cache" / ".matchlock" / "tmp").iterdir()) == []


async def test_archive_pieces_install_unpacked(server: ContentServer, tmp_path: Path) -> None:
    zipped, tarred = zip_bytes(FILES), tar_bytes(FILES)
    server.add("z", zipped)
    server.add("t", tarred)
    pieces = {
        "chars": {
            "pieces": {
                "z": piece(zipped, server.url("ok", "z"), unpack="zip"),
                "t": piece(tarred, server.url("ok", "t"), unpack="tar"),
            }
        }
    }
    folders = await download(config(pieces), tmp_path / "cache", policy=FAST_POLICY)
    assert tree(folders["chars/z"]) == FILES == tree(folders["chars/t"])
    assert folders["chars/z"].name.endswith("-zip")


NAME_PARTS = st.sampled_from(["..", ".", "", "a", "b.txt", "C:", "\\", "/", "é", "\0", "~"])


@given(parts=st.lists(NAME_PARTS, min_size=1, max_size=5), slash=st.booleans())
@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_member_name_writes_outside_the_folder(
    tmp_path: Path, parts: list[str], slash: bool
) -> None:
    name = ("/" if slash else "") + "/".join(parts)
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    archive = work / "a.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(zipfile.ZipInfo(name) if name else "x", b"content")
    into = work / "deep" / "into"
    into.mkdir(parents=True)
    with contextlib.suppress(ArchiveError):
        unpack_archive(archive, "zip", into, UnpackLimits())
    outside = {p for p in work.rglob("*") if into not in p.parents and p != into}
    assert outside == {archive, work / "deep"}
