"""Filesystem helpers shared by the stages: atomic output folders and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hashlib import _Hash

from danbert_convert.errors import OutputExistsError

HashT = TypeVar("HashT", bound="_Hash")

_CHUNK = 8 << 20


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    """Hex SHA-256 of a file, read in large chunks (hashlib releases the GIL on them)."""
    return hash_file_into(hashlib.sha256(), path, chunk).hexdigest()


def hash_file_into(h: HashT, path: Path, chunk: int = _CHUNK) -> HashT:
    """Feed a file's bytes to `h` and return it (to continue hashing, e.g. a resumed download)."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_writable_target(target: Path, force: bool) -> None:
    """Refuse an existing non-empty target unless forced; refuse a file where a folder goes."""
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputExistsError(f"{target}: {parent} is a file, not a folder")
    if is_nonempty_dir(target) and not force:
        raise OutputExistsError(f"{target} exists and is not empty (use --force to replace it)")


def check_not_inside(target: Path, inputs: list[Path]) -> None:
    """Refuse a target that is, or contains, one of the inputs: replacing it would delete them.

    Compared by resolved path and by file identity, so symlinks, `..` (even through folders
    yet to be made), bind mounts and case-insensitive file systems (macOS) cannot hide
    that two paths are one folder.
    """
    resolved = Path(target).resolve()
    try:
        root: os.stat_result | None = os.stat(target)
    except OSError:
        root = None
    for path in inputs:
        p = Path(path).resolve()
        for folder in (p, *p.parents):
            try:
                same = folder == resolved or (
                    root is not None and os.path.samestat(os.stat(folder), root)
                )
            except OSError:
                continue
            if same:
                raise OutputExistsError(
                    f"{target} ({folder}): replacing it would delete {p}, which the conversion "
                    "reads; choose another output folder"
                )


@contextlib.contextmanager
def atomic_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success it replaces `target` by rename.

    On any exception, KeyboardInterrupt included, the temporary folder is removed and
    `target` is left exactly as it was.
    """
    target = Path(target)
    check_writable_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        # An old target moves aside first so that a failure here never loses both copies.
        old: Path | None = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old / target.name, target)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def blame(path: Path) -> Iterator[None]:
    """Make an OSError raised while writing `path` name it: a failed write() names no file."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_json(path: Path, obj: object) -> None:
    """Pretty, UTF-8 JSON with a final newline (config and manifest files people read)."""
    with blame(path):
        path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
