"""The folder digest: platform-neutral, order-free, sensitive to every name and byte."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from matchlock.cli import main
from matchlock.core.errors import FolderDigestError
from matchlock.downloads.folder_digest import (
    CHUNK_BYTES,
    FOLDER_DIGEST_HEADER,
    folder_digest,
    folder_listing,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX links and special files")


def doc_example(name: str) -> str:
    text = (DOCS / "folder-digest.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- example: {name} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"docs/folder-digest.md has no example {name!r}"
    return found.group(1)


def build(root: Path, files: dict[str, bytes | None], order: list[str] | None = None) -> Path:
    """Create ``files`` under ``root`` in ``order``; a None value makes an empty folder."""
    for relative in order if order is not None else list(files):
        content = files[relative]
        path = root / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return root


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def test_the_documented_example_is_true(folder: Path) -> None:
    """docs/folder-digest.md: its listing and digest are what we produce."""
    described = json.loads(doc_example("files"))
    files = {
        name: None if text is None else text.encode("utf-8") for name, text in described.items()
    }
    build(folder, files)
    listing = b"".join(folder_listing(folder))
    shown = listing.decode("utf-8").replace("\0", "<NUL>")
    print(shown, folder_digest(folder))
    assert shown == doc_example("listing") + "\n"
    assert folder_digest(folder) == doc_example("digest") == hashlib.sha256(listing).hexdigest()


def test_an_empty_folder_is_the_header_alone(folder: Path) -> None:
    (folder / "nothing" / "here").mkdir(parents=True)
    assert list(folder_listing(folder)) == [FOLDER_DIGEST_HEADER]
    assert folder_digest(folder) == hashlib.sha256(b"matchlock-folder-v1\n").hexdigest()


NAME = st.text(alphabet="ab_.-0é", min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))
PATH = st.lists(NAME, min_size=1, max_size=3).map("/".join)


def no_file_is_a_folder(files: dict[str, bytes]) -> bool:
    return not any(other.startswith(path + "/") for path in files for other in files)


TREES = st.dictionaries(PATH, st.binary(max_size=64), min_size=1, max_size=6).filter(
    no_file_is_a_folder
)


@given(st.data(), TREES)
def test_the_digest_ignores_creation_order_empty_folders_modes_and_times(
    data: st.DataObject, tree: dict[str, bytes]
) -> None:
    files: dict[str, bytes | None] = dict(tree)
    order = data.draw(st.permutations(list(files)))
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        first = folder_digest(build(Path(one), files))
        build(Path(two), files | {"empty/folder": None}, [*order, "empty/folder"])
        for path in Path(two).rglob("*"):
            if path.is_file():
                path.chmod(0o600)
                os.utime(path, (1, 1))
        assert folder_digest(two) == first


@given(st.data(), TREES)
def test_any_change_to_a_name_or_a_byte_changes_the_digest(
    data: st.DataObject, tree: dict[str, bytes]
) -> None:
    changed = dict(tree)
    victim = data.draw(st.sampled_from(sorted(tree)))
    kind = data.draw(st.sampled_from(["content", "rename", "remove", "add"]))
    if kind == "content":
        changed[victim] = data.draw(st.binary(max_size=64).filter(lambda b: b != tree[victim]))
    elif kind == "rename":
        changed[data.draw(PATH)] = changed.pop(victim)
    elif kind == "remove":
        del changed[victim]
    else:
        changed[data.draw(PATH)] = data.draw(st.binary(max_size=64))
    assume(changed != tree and no_file_is_a_folder(changed))
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        before = folder_digest(build(Path(one), dict(tree)))
        after = folder_digest(build(Path(two), dict(changed)))
    assert before != after


def test_large_files_are_streamed_with_flat_memory(folder: Path) -> None:
    content = os.urandom(1024) * (16 * 1024) + b"tail"  # 16 MiB and 4 bytes
    (folder / "big.bin").write_bytes(content)
    tracemalloc.start()
    try:
        lines = list(folder_listing(folder))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = b"big.bin\0%d\0%s\n" % (len(content), hashlib.sha256(content).hexdigest().encode())
    assert lines == [FOLDER_DIGEST_HEADER, expected]
    assert peak < 2 * CHUNK_BYTES + 512 * 1024


@posix_only
@pytest.mark.parametrize("kind", ["file link", "folder link", "dangling link", "fifo", "socket"])
def test_links_and_special_files_are_refused_by_name(folder: Path, kind: str) -> None:
    deep = folder / "a" / "b"
    deep.mkdir(parents=True)
    (folder / "a" / "real.txt").write_text("x")
    culprit = deep / "s"
    if kind == "file link":
        culprit.symlink_to(folder / "a" / "real.txt")
    elif kind == "folder link":
        culprit.symlink_to(folder / "a")
    elif kind == "dangling link":
        culprit.symlink_to(folder / "nowhere")
    elif kind == "fifo":
        os.mkfifo(culprit)
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(culprit))
        listener.close()
    with pytest.raises(FolderDigestError) as caught:
        folder_digest(folder)
    assert str(culprit) in str(caught.value)


def test_a_missing_folder_or_a_file_is_refused(folder: Path) -> None:
    (folder / "file").write_text("x")
    for path in (folder / "file", folder / "missing"):
        with pytest.raises(FolderDigestError, match="not a folder"):
            folder_digest(path)


def test_names_equal_after_nfc_are_refused(folder: Path) -> None:
    (folder / "\u00e9").write_text("composed")
    try:
        (folder / "e\u0301").write_text("decomposed")
    except OSError:
        pytest.skip("this filesystem normalizes names itself")
    if len(list(folder.iterdir())) == 1:
        pytest.skip("this filesystem normalizes names itself")
    with pytest.raises(FolderDigestError, match="normalization"):
        folder_digest(folder)


@posix_only
def test_names_that_are_not_utf8_are_refused(folder: Path) -> None:
    try:
        with open(os.path.join(os.fsencode(folder), b"bad\xff"), "wb"):
            pass
    except OSError:
        pytest.skip("this filesystem wants UTF-8 names")
    with pytest.raises(FolderDigestError, match="not valid UTF-8"):
        folder_digest(folder)


def test_the_cli_prints_the_digest(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "a.txt").write_text("one\n")
    assert main(["digest", str(folder)]) == 0
    assert capsys.readouterr().out == folder_digest(folder) + "\n"
    assert main(["digest", str(folder / "a.txt")]) == 2
    assert "not a folder" in capsys.readouterr().err
