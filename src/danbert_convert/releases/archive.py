"""Safe extraction of a release zip, and locating the checkpoint folder inside it.

The zip is checked as a whole before anything is written (paths, symlinks, size and ratio
caps, a bert_config.json somewhere), then extracted into a temporary sibling of the target
that is renamed into place only when every entry has been read and its CRC checked.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from danbert_convert._fs import atomic_dir
from danbert_convert.errors import InputError, OutputExistsError

CONFIG_NAME = "bert_config.json"
MAX_TOTAL = 8 << 30
"""Default cap on the uncompressed size; the Danish v2 release unpacks to about 1.4 GB."""
MAX_RATIO = 200.0
"""Default cap on one entry's compression ratio; checkpoint floats barely compress."""
RATIO_MIN_SIZE = 1 << 20
"""Entries smaller than this are never refused for their ratio: they cannot fill a disk."""

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class ZipCorruptError(InputError):
    """The zip's bytes are damaged (truncated, bad CRC), as opposed to a well-formed zip that
    is refused for what it holds."""


@dataclass(frozen=True)
class UnpackResult:
    folder: Path
    """What was created (or found) under the destination."""
    checkpoint_dir: Path
    """The folder holding bert_config.json: what `danbert convert` takes."""
    unpacked: bool
    """False when an earlier unpack was found and reused."""
    nbytes: int


def entry_path(zip_path: Path, info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The entry's relative path, None for macOS junk; InputError for unsafe entries."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise InputError(f"{zip_path}: entry {info.filename!r} has an absolute path; refusing it")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{zip_path}: entry {info.filename!r} points outside the folder (..)")
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"{zip_path}: entry {info.filename!r} is a symbolic link; refusing it")
    return PurePosixPath(*parts)


def check_size(
    zip_path: Path,
    entries: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    max_total: int,
    max_ratio: float,
) -> int:
    """Total uncompressed bytes; InputError if over `max_total` or an entry looks like a bomb."""
    total = 0
    for info, _ in entries:
        total += info.file_size
        if info.file_size >= RATIO_MIN_SIZE:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > max_ratio:
                raise InputError(
                    f"{zip_path}: entry {info.filename!r} expands {ratio:.0f}x "
                    f"(limit {max_ratio:.0f}x); refusing a possible zip bomb"
                )
    if total > max_total:
        raise InputError(
            f"{zip_path}: unpacks to {total} bytes, over the limit of {max_total}; "
            "refusing a possible zip bomb"
        )
    return total


def pick_config(where: object, paths: list[PurePosixPath]) -> PurePosixPath:
    """The shallowest bert_config.json among `paths`; InputError if none or ambiguous."""
    configs = sorted((p for p in paths if p.name == CONFIG_NAME), key=lambda p: (len(p.parts), p))
    if not configs:
        raise InputError(f"{where}: no {CONFIG_NAME} inside; not a Google-BERT release")
    same_depth = [str(p.parent) for p in configs if len(p.parts) == len(configs[0].parts)]
    if len(same_depth) > 1:
        raise InputError(
            f"{where}: several checkpoint folders ({', '.join(same_depth)}); pick one yourself"
        )
    return configs[0]


def locate_checkpoint_dir(folder: Path) -> Path:
    """The folder under `folder` (or `folder` itself) holding bert_config.json."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    paths = [p.relative_to(folder) for p in folder.rglob(CONFIG_NAME)]
    return folder / pick_config(folder, [PurePosixPath(p.as_posix()) for p in paths]).parent


def open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise InputError(f"{zip_path}: no such file") from None
    except PermissionError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ZipCorruptError(
            f"{zip_path}: not a zip file or truncated (no readable central directory: {e})"
        ) from None


def plan(
    zip_path: Path, zf: zipfile.ZipFile
) -> tuple[str | None, list[tuple[zipfile.ZipInfo, PurePosixPath]]]:
    """The zip's single top folder (None if it has none) and the entries to extract, each
    with its output path below that folder."""
    entries = [(info, p) for info in zf.infolist() if (p := entry_path(zip_path, info)) is not None]
    if not entries:
        raise InputError(f"{zip_path}: the zip holds no files")
    seen: set[PurePosixPath] = set()
    for info, p in entries:
        if p in seen and not info.is_dir():
            raise InputError(f"{zip_path}: entry {info.filename!r} appears twice")
        seen.add(p)
    tops = {p.parts[0] for _, p in entries}
    if len(tops) == 1 and all(len(p.parts) > 1 or info.is_dir() for info, p in entries):
        stripped = [(i, PurePosixPath(*p.parts[1:])) for i, p in entries if len(p.parts) > 1]
        return tops.pop(), stripped
    return None, entries


def extract_entry(
    zip_path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, bar: tqdm
) -> int:
    """Write one entry to `out`, CRC checked by zipfile; InputError naming the entry."""
    n = 0
    try:
        with zf.open(info) as src, open(out, "xb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    except FileExistsError:
        raise InputError(f"{zip_path}: entry {info.filename!r} appears twice") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ZipCorruptError(
            f"{zip_path}: entry {info.filename!r} is corrupt or truncated: {e}"
        ) from None
    except (NotImplementedError, RuntimeError) as e:  # an unsupported method, encryption
        raise InputError(f"{zip_path}: entry {info.filename!r} cannot be read: {e}") from None
    if n != info.file_size:
        raise ZipCorruptError(
            f"{zip_path}: entry {info.filename!r} holds {n} bytes, its header says {info.file_size}"
        )
    return n


def unpack(
    zip_path: Path,
    dest: Path,
    *,
    force: bool = False,
    progress: bool | None = None,
    max_total: int = MAX_TOTAL,
    max_ratio: float = MAX_RATIO,
) -> UnpackResult:
    """Extract `zip_path` into a new folder under `dest` and locate the checkpoint in it.

    The folder is the zip's single top-level folder (or the zip's stem when there is none).
    An existing folder holding a checkpoint is reused unless `force`.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    with open_zip(zip_path) as zf:
        top, entries = plan(zip_path, zf)
        total = check_size(zip_path, entries, max_total, max_ratio)
        config = pick_config(zip_path, [p for info, p in entries if not info.is_dir()])
        target = dest / (top or zip_path.stem)
        if not force and (target / config).is_file():
            return UnpackResult(target, target / config.parent, unpacked=False, nbytes=0)
        try:
            _extract(zip_path, zf, entries, total, target, force, progress)
        except OutputExistsError:
            # Another unpack of a release finished first (`--from` takes no lock): use it.
            if force or not (target / config).is_file():
                raise
            return UnpackResult(target, target / config.parent, unpacked=False, nbytes=0)
    return UnpackResult(target, target / config.parent, unpacked=True, nbytes=total)


def _extract(
    zip_path: Path,
    zf: zipfile.ZipFile,
    entries: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    total: int,
    target: Path,
    force: bool,
    progress: bool | None,
) -> None:
    """Extract `entries` into a temporary sibling of `target` that then replaces it."""
    with (
        atomic_dir(target, force=force) as tmp,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"unpacking {zip_path.name}",
            disable=_disable(progress),
            leave=False,
        ) as bar,
    ):
        root = tmp.resolve()
        for info, rel in entries:
            out = tmp / rel
            # Belt and braces: entry_path already refused every way out that we know of.
            if not out.resolve().is_relative_to(root):
                raise InputError(f"{zip_path}: entry {info.filename!r} resolves outside")
            try:
                (out if info.is_dir() else out.parent).mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InputError(
                    f"{zip_path}: entry {info.filename!r} clashes with a file of the same name"
                ) from None
            if not info.is_dir():
                extract_entry(zip_path, zf, info, out, bar)


def _disable(progress: bool | None) -> bool | None:
    """tqdm's `disable` from our tri-state: True on, False off, None when stderr is a TTY."""
    return None if progress is None else not progress
