"""Folder streams on disk: a real folder (the worked example of docs/folder-digest.md among
them) encodes to a stream that decodes into a staging folder with the same digest; a folder
that is not the pinned one is never encoded; every hostile stream is refused and installs
nothing whole."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchlock.core import folderstream as fs
from matchlock.downloads.folder_digest import folder_digest, folder_listing
from matchlock.downloads.folder_stream import (
    FolderChanged,
    decode_folder_stream,
    encode_folder_stream,
)

EXAMPLE = {  # docs/folder-digest.md, the worked example (é written decomposed)
    "a/b.txt": b"two\n",
    "e\u0301.txt": "café\n".encode(),
    "Z.txt": b"",
    "a.txt": b"one\n",
}
EXAMPLE_DIGEST = "a3c50b5988431ced668f0ac33b67e25a080da7b05e7d490fd486f57d9af4a906"


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    (root / "empty").mkdir()
    for name, content in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def pin_of(folder: Path) -> tuple[str, int]:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return folder_digest(folder), size


def write_stream(tmp_path: Path, data: bytes) -> Path:
    part = tmp_path / "stream.part"
    part.write_bytes(data)
    return part


def round_trip(tmp_path: Path, folder: Path) -> Path:
    digest, size = pin_of(folder)
    stream = encode_folder_stream(folder, digest, size)
    data = b"".join(stream.chunks())
    assert len(data) == stream.length <= fs.folder_stream_bound(size)
    staging = tmp_path / "staging"
    staging.mkdir()
    listed = decode_folder_stream(
        write_stream(tmp_path, data), staging, folder_sha256=digest, folder_size=size
    )
    assert [f.size for f in listed] == [f.size for f, _ in stream.files]
    assert folder_digest(staging) == digest
    return staging


def test_the_worked_example_round_trips(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "example", EXAMPLE)
    assert folder_digest(folder) == EXAMPLE_DIGEST
    staging = round_trip(tmp_path, folder)
    assert (staging / "\u00e9.txt").read_bytes() == "café\n".encode()  # written composed
    assert b"".join(folder_listing(staging)) == b"".join(folder_listing(folder))


def test_a_folder_of_large_files_round_trips_in_megabyte_chunks(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    folder = make_folder(tmp_path / "big", {"x/big.bin": big, "small": b"s"})
    digest, size = pin_of(folder)
    stream = encode_folder_stream(folder, digest, size)
    assert max(len(c) for c in stream.chunks()) <= 1024 * 1024
    staging = round_trip(tmp_path, folder)
    assert (staging / "x" / "big.bin").read_bytes() == big


def test_chunks_from_any_offset_are_the_streams_tail(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", EXAMPLE)
    stream = encode_folder_stream(folder, *pin_of(folder))
    whole = b"".join(stream.chunks())
    for offset in (0, 1, len(stream.head) - 1, len(stream.head), len(stream.head) + 3, len(whole)):
        assert b"".join(stream.chunks(offset)) == whole[offset:]
    with pytest.raises(ValueError, match="outside"):
        next(stream.chunks(len(whole) + 1))


def test_the_async_chunks_are_the_same_bytes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", EXAMPLE)
    stream = encode_folder_stream(folder, *pin_of(folder))

    async def gather() -> bytes:
        return b"".join([chunk async for chunk in stream.achunks(5)])

    assert asyncio.run(gather()) == b"".join(stream.chunks())[5:]


def test_a_folder_that_is_not_the_pinned_one_is_never_encoded(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", EXAMPLE)
    digest, size = pin_of(folder)
    with pytest.raises(FolderChanged, match=f"not the pinned {'0' * 64}"):
        encode_folder_stream(folder, "0" * 64, size)
    with pytest.raises(FolderChanged, match="hold 14 bytes; the pinned folder_size is 15"):
        encode_folder_stream(folder, digest, size + 1)
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(FolderChanged, match="symbolic link"):
        encode_folder_stream(folder, digest, size)


def test_a_file_edited_while_it_is_sent_stops_the_stream(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", {"a.txt": b"one\n", "b.txt": b"two\n"})
    stream = encode_folder_stream(folder, *pin_of(folder))
    (folder / "b.txt").write_bytes(b"TWO\n")
    with pytest.raises(FolderChanged, match=r"b\.txt changed while it was sent"):
        b"".join(stream.chunks())
    (folder / "b.txt").write_bytes(b"two and more\n")
    with pytest.raises(FolderChanged, match="longer than its listed 4 bytes"):
        b"".join(stream.chunks())
    (folder / "b.txt").write_bytes(b"tw")
    with pytest.raises(FolderChanged, match="shorter than its listed 4 bytes"):
        b"".join(stream.chunks())


def hostile(tmp_path: Path, paths: dict[bytes, bytes]) -> tuple[Path, str, int]:
    """A stream whose listing names these raw paths (pinned as is: the digest matches)."""
    listing = fs.FOLDER_LISTING_HEADER
    for path, content in sorted(paths.items()):
        digest = hashlib.sha256(content).hexdigest().encode()
        listing += b"%s\0%d\0%s\n" % (path, len(content), digest)
    data = fs.stream_head(listing) + b"".join(c for _, c in sorted(paths.items()))
    size = sum(len(c) for c in paths.values())
    return write_stream(tmp_path, data), hashlib.sha256(listing).hexdigest(), size


@pytest.mark.parametrize(
    "path", [b"../x", b"a/../../x", b"/tmp/evil", b"a\\..\\x", b"a\0b", b"C:/x", b"./x"]
)
def test_a_hostile_path_writes_nothing_anywhere(tmp_path: Path, path: bytes) -> None:
    part, digest, size = hostile(tmp_path, {path: b"evil"})
    staging = tmp_path / "deep" / "staging"
    staging.mkdir(parents=True)
    with pytest.raises(fs.BadListing):
        decode_folder_stream(part, staging, folder_sha256=digest, folder_size=size)
    assert list(staging.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "stream.part"]


def valid_stream(tmp_path: Path) -> tuple[bytes, str, int]:
    folder = make_folder(tmp_path / "f", EXAMPLE)
    digest, size = pin_of(folder)
    return b"".join(encode_folder_stream(folder, digest, size).chunks()), digest, size


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d[:-2] + bytes([d[-2] ^ 1]) + d[-1:], fs.FileCorrupt),
        (lambda d: d[:-1], fs.StreamTooShort),
        (lambda d: d[:40], fs.StreamTooShort),
        (lambda d: d + b"x", fs.StreamTooLong),
        (lambda d: fs.FOLDER_STREAM_HEADER + b"99999999\n" + d[60:], fs.ListingTooLong),
        (lambda d: b"matchlock-folder-stream-v9" + d[26:], fs.BadStreamHeader),
    ],
)
def test_a_damaged_stream_is_refused(tmp_path: Path, change: object, error: type) -> None:
    data, digest, size = valid_stream(tmp_path)
    part = write_stream(tmp_path, change(data))  # type: ignore[operator]
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(error):
        decode_folder_stream(part, staging, folder_sha256=digest, folder_size=size)
    assert not staging.exists() or folder_digest(staging) != digest


def test_a_part_longer_than_the_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    part = tmp_path / "huge.part"
    with open(part, "wb") as file:
        file.truncate(fs.folder_stream_bound(10) + 1)  # sparse: no bytes written
    with pytest.raises(fs.StreamTooLong, match="more than its bound"):
        decode_folder_stream(part, tmp_path, folder_sha256="0" * 64, folder_size=10)


names = st.sampled_from(["a", "B", "c.txt", "d d", "\u00e9", "long-name_1.def", "Z"])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.lists(names, min_size=1, max_size=3).map("/".join),
        st.binary(max_size=3000),
        max_size=8,
    )
)
def test_any_real_folder_round_trips(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]
) -> None:
    paths = set(files)
    if any("/".join(p.split("/")[:d]) in paths for p in paths for d in range(1, p.count("/") + 1)):
        return  # a file where another file's folder would be: no folder looks like that
    tmp = tmp_path_factory.mktemp("prop")
    round_trip(tmp, make_folder(tmp / "folder", files))


@pytest.mark.parametrize("listed", [{"x": b"1"}, {"d/y": b"2"}])
def test_a_path_that_lands_on_something_already_written_is_refused(
    tmp_path: Path, listed: dict[str, bytes]
) -> None:
    """What a file system that ignores case would do with 'A' and 'a' (here: staging already
    holds 'x' and 'd' as files), refused as an unsafe path, never an overwrite."""
    folder = make_folder(tmp_path / "f", listed)
    digest, size = pin_of(folder)
    part = write_stream(tmp_path, b"".join(encode_folder_stream(folder, digest, size).chunks()))
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "x").write_bytes(b"mine")
    (staging / "d").write_bytes(b"mine")
    with pytest.raises(fs.UnsafePath, match="already written"):
        decode_folder_stream(part, staging, folder_sha256=digest, folder_size=size)
    assert (staging / "x").read_bytes() == (staging / "d").read_bytes() == b"mine"


def open_files(path: Path) -> int:
    """How many descriptors of this process have ``path`` open (Linux /proc)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_a_consumer_that_stops_early_leaves_no_file_open(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", {"big.bin": os.urandom(3 * 1024 * 1024)})
    stream = encode_folder_stream(folder, *pin_of(folder))

    async def first_two() -> int:
        chunks = stream.achunks()
        await anext(chunks)  # the head
        await anext(chunks)  # the first MiB of big.bin: the file is open now
        held = open_files(folder / "big.bin")
        await chunks.aclose()
        return held

    assert asyncio.run(first_two()) == 1
    assert open_files(folder / "big.bin") == 0
