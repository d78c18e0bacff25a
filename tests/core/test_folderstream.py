"""The pure folder stream reader: a whole stream in any split is read file by file; every hostile
stream is refused with the error naming what is wrong, before the content it concerns is
trusted."""

from __future__ import annotations

import hashlib
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matchlock.core import folderstream as fs
from matchlock.core.folderstream import (
    FOLDER_STREAM_HEADER,
    MAX_FOLDER_LISTING_BYTES,
    FileBegins,
    FileChunk,
    FileEnds,
    FolderStreamReader,
    StreamPart,
    folder_stream_bound,
    stream_head,
    stream_length,
)


def listing_of(files: dict[str, bytes]) -> bytes:
    """The listing of docs/folder-digest.md for these (already NFC, sorted-later) files."""
    lines = [fs.FOLDER_LISTING_HEADER]
    for path in sorted(files, key=lambda p: p.encode()):
        content = files[path]
        digest = hashlib.sha256(content).hexdigest()
        lines.append(b"%s\0%d\0%s\n" % (path.encode(), len(content), digest.encode()))
    return b"".join(lines)


def stream_of(files: dict[str, bytes]) -> tuple[bytes, str, int]:
    """A folder stream of ``files``, its pinned folder digest and folder size."""
    listing = listing_of(files)
    body = b"".join(files[p] for p in sorted(files, key=lambda p: p.encode()))
    return stream_head(listing) + body, hashlib.sha256(listing).hexdigest(), len(body)


def read(stream: bytes, digest: str, size: int, split: int = 7) -> dict[str, bytes]:
    """Feed ``stream`` in pieces of ``split`` bytes; the files it held."""
    reader = FolderStreamReader(digest, size)
    parts: list[StreamPart] = []
    for start in range(0, len(stream), split):
        parts += reader.feed(stream[start : start + split])
    reader.finish()
    return collect(parts)


def collect(parts: list[StreamPart]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    current = None
    for part in parts:
        if isinstance(part, FileBegins):
            current = part.file.path
            files[current] = b""
        elif isinstance(part, FileChunk):
            assert current is not None
            files[current] += part.data
        else:
            assert isinstance(part, FileEnds) and part.file.path == current
            current = None
    assert current is None
    return files


FILES = {"a/b.txt": b"two\n", "\u00e9.txt": "café\n".encode(), "Z.txt": b"", "a.txt": b"one\n"}


def test_the_worked_example_streams_with_the_documented_digest() -> None:
    stream, digest, size = stream_of(FILES)
    assert digest == "a3c50b5988431ced668f0ac33b67e25a080da7b05e7d490fd486f57d9af4a906"
    assert stream.startswith(b"matchlock-folder-stream-v1\n315\n")
    assert len(stream) == 360  # docs/folder-digest.md, "The folder stream"
    assert stream.endswith(b"one\ntwo\ncaf\xc3\xa9\n")
    assert len(stream) == stream_length(len(listing_of(FILES)), size) <= folder_stream_bound(size)
    for split in (1, 5, 64, len(stream)):
        assert read(stream, digest, size, split) == FILES


def test_files_are_reported_in_listing_order_with_empty_ones_ended_at_once() -> None:
    stream, digest, size = stream_of(FILES)
    parts = FolderStreamReader(digest, size).feed(stream)
    begun = [p.file.path for p in parts if isinstance(p, FileBegins)]
    assert begun == ["Z.txt", "a.txt", "a/b.txt", "\u00e9.txt"]
    assert isinstance(parts[1], FileEnds) and parts[1].file.path == "Z.txt"


def test_an_empty_folder_is_its_head_alone() -> None:
    stream, digest, size = stream_of({})
    assert read(stream, digest, size) == {}


def refused(stream: bytes, digest: str, size: int) -> fs.FolderStreamError:
    reader = FolderStreamReader(digest, size)
    with pytest.raises(fs.FolderStreamError) as raised:
        for start in range(0, len(stream), 3):
            reader.feed(stream[start : start + 3])
        reader.finish()
    return raised.value


def hostile_listing(path: bytes, content: bytes = b"x") -> tuple[bytes, str, int]:
    digest = hashlib.sha256(content).hexdigest().encode()
    listing = fs.FOLDER_LISTING_HEADER + b"%s\0%d\0%s\n" % (path, len(content), digest)
    return stream_head(listing) + content, hashlib.sha256(listing).hexdigest(), len(content)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (b"../x", "'.' or '..'"),
        (b"a/../../x", "'.' or '..'"),
        (b"/etc/passwd", "absolute"),
        (b"a\\b", "backslash"),
        (b"a\0b", "NUL"),  # the first NUL ends the path: the rest is no size
        (b"c:x", "':'"),
        (b"a//b", "empty"),
        (b"./a", "'.' or '..'"),
        (b"a/", "empty"),
        ("e\u0301.txt".encode(), "NFC"),
        (b"\xff.txt", "not UTF-8"),
    ],
)
def test_an_unsafe_path_is_refused_before_any_content(path: bytes, why: str) -> None:
    stream, digest, size = hostile_listing(path)
    head_only = stream[: -size or None]
    error = refused(head_only, digest, size)
    assert isinstance(error, fs.BadListing)
    assert why in str(error) or "malformed" in str(error)


def test_a_file_inside_another_files_path_is_refused() -> None:
    stream, digest, size = stream_of({"a": b"1", "a/b": b"2"})
    error = refused(stream, digest, size)
    assert isinstance(error, fs.UnsafePath) and "inside the file 'a'" in str(error)


def test_a_wrong_byte_in_a_file_is_refused_naming_the_file() -> None:
    stream, digest, size = stream_of(FILES)
    bad = bytearray(stream)
    bad[-3] ^= 1  # inside é.txt, the last file
    error = refused(bytes(bad), digest, size)
    assert isinstance(error, fs.FileCorrupt) and "'\u00e9.txt'" in str(error)
    assert hashlib.sha256("café\n".encode()).hexdigest() in str(error)


def test_a_truncated_stream_is_refused_at_its_end() -> None:
    stream, digest, size = stream_of(FILES)
    for cut in (0, 10, len(stream) - size, len(stream) - 1):
        error = refused(stream[:cut], digest, size)
        assert isinstance(error, fs.StreamTooShort), cut
        assert f"after {cut} bytes" in str(error)


def test_extra_bytes_are_refused_as_they_arrive() -> None:
    stream, digest, size = stream_of(FILES)
    reader = FolderStreamReader(digest, size)
    with pytest.raises(fs.StreamTooLong, match=f"announced {len(stream)} bytes"):
        reader.feed(stream + b"!")
    reader = FolderStreamReader(digest, size)
    reader.feed(stream)
    with pytest.raises(fs.StreamTooLong):
        reader.feed(b"!")


def test_a_listing_other_than_the_pinned_one_is_refused() -> None:
    stream, _, size = stream_of(FILES)
    error = refused(stream, "0" * 64, size)
    assert isinstance(error, fs.ListingMismatch) and "0" * 64 in str(error)


def test_sizes_not_summing_to_the_pinned_folder_size_are_refused() -> None:
    listing = listing_of(FILES)
    digest = hashlib.sha256(listing).hexdigest()
    error = refused(stream_head(listing) + b"x" * 20, digest, 20)
    assert isinstance(error, fs.FolderSizeMismatch) and "hold 14 bytes" in str(error)


@pytest.mark.parametrize(
    "head",
    [
        b"matchlock-folder-stream-v2\n20\n",
        b"not a stream at all\n",
        FOLDER_STREAM_HEADER + b"\n",
        FOLDER_STREAM_HEADER + b"020\n",
        FOLDER_STREAM_HEADER + b"-1\n",
        FOLDER_STREAM_HEADER + b"2 0\n",
    ],
)
def test_a_bad_header_is_refused(head: bytes) -> None:
    assert isinstance(refused(head + b"x" * 40, "0" * 64, 0), fs.BadStreamHeader)


def test_a_listing_too_long_is_refused_before_it_is_read() -> None:
    over = FOLDER_STREAM_HEADER + b"%d\n" % (MAX_FOLDER_LISTING_BYTES + 1)
    assert isinstance(refused(over, "0" * 64, 0), fs.ListingTooLong)
    nine_digits = FOLDER_STREAM_HEADER + b"123456789"
    assert isinstance(refused(nine_digits, "0" * 64, 0), fs.ListingTooLong)
    with pytest.raises(fs.ListingTooLong):
        stream_head(b"x" * (MAX_FOLDER_LISTING_BYTES + 1))


def test_a_listing_out_of_order_or_malformed_is_refused() -> None:
    good = listing_of({"a": b"1", "b": b"2"})
    lines = good.split(b"\n")
    swapped = b"\n".join([lines[0], lines[2], lines[1], b""])
    for listing in (swapped, good[:-1] + b"x", good.replace(b"\x001\x00", b"\x00 1\x00", 1)):
        digest = hashlib.sha256(listing).hexdigest()
        error = refused(stream_head(listing) + b"12", digest, 2)
        assert isinstance(error, fs.BadListing)


def test_the_listing_header_is_the_folder_digests() -> None:
    from matchlock.downloads.folder_digest import FOLDER_DIGEST_HEADER

    assert fs.FOLDER_LISTING_HEADER == FOLDER_DIGEST_HEADER


names = st.text(
    alphabet=st.characters(exclude_characters="/\\:\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=8,
).filter(lambda n: n not in (".", "..") and n == unicodedata.normalize("NFC", n))


@given(
    st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=64)),
    st.integers(min_value=1, max_value=200),
)
def test_any_folder_round_trips_in_any_split(files: dict[str, bytes], split: int) -> None:
    paths = set(files)
    if any("/".join(p.split("/")[:d]) in paths for p in paths for d in range(1, p.count("/") + 1)):
        return  # a file where another needs a folder: no real folder looks like that
    stream, digest, size = stream_of(files)
    assert read(stream, digest, size, split) == files


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_arbitrary_bytes_never_escape_as_anything_but_a_stream_error(
    junk: bytes, position: int
) -> None:
    stream, digest, size = stream_of(FILES)
    mangled = stream[:position] + junk + stream[position + len(junk) :]
    if mangled == stream:
        return
    reader = FolderStreamReader(digest, size)
    with pytest.raises(fs.FolderStreamError):
        reader.feed(mangled)
        reader.finish()
