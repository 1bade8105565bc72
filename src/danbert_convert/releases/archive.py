"""Safe extraction of a release zip, and locating the checkpoint folder inside it.

The zip is checked as a whole before anything is written (paths, symlinks, size and ratio
caps, a checkpoint folder somewhere), then extracted into a temporary sibling of the target
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
STATE_NAME = "checkpoint"
"""TensorFlow's checkpoint state file, beside the checkpoints it lists."""
VOCAB_NAME = "vocab.txt"
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
    """The folder holding the checkpoint: what `danbert convert` takes."""
    unpacked: bool
    """False when an earlier unpack was found and reused."""
    nbytes: int
    vocab: Path | None = None
    """vocab.txt beside the checkpoint, else the nearest above it in the release (ELECTRA's
    data/vocab.txt for data/models/NAME/); None if there is none."""


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


def _marks_checkpoint(name: str) -> bool:
    """A file that only a checkpoint folder holds: BERT's config, a TF checkpoint's index or
    state file (ELECTRA releases have no config)."""
    return name in (CONFIG_NAME, STATE_NAME) or name.endswith(".index")


@dataclass(frozen=True)
class Located:
    """A checkpoint folder found among a release's files, paths relative to the release."""

    folder: PurePosixPath
    marker: PurePosixPath
    """A file in `folder` that marks it (its presence says an unpack is already there)."""
    vocab: PurePosixPath | None

    def under(self, root: Path, unpacked: bool = False, nbytes: int = 0) -> UnpackResult:
        """The result for the release unpacked (or found) at `root`."""
        vocab = root / self.vocab if self.vocab is not None else None
        return UnpackResult(root, root / self.folder, unpacked, nbytes, vocab)


def pick_checkpoint_dir(
    where: object, paths: list[PurePosixPath], subfolder: str | None = None, root: str = ""
) -> Located:
    """The shallowest folder among `paths` holding a checkpoint (a `*.index`, a `checkpoint`
    state file or a bert_config.json), and its vocab.txt (there, else the nearest above it).

    `subfolder`, a regular expression searched case-insensitively in each folder's path
    (below `root`, the release folder's name), chooses among several (a zip holding variants).
    InputError naming `where` if there is no checkpoint folder, none matches, or several
    remain at the same depth.
    """
    markers: dict[PurePosixPath, PurePosixPath] = {}
    for p in sorted(paths):
        if _marks_checkpoint(p.name):
            markers.setdefault(p.parent, p)
    if not markers:
        raise InputError(
            f"{where}: no {CONFIG_NAME} inside, nor a TensorFlow checkpoint (*.index); "
            "not a BERT or ELECTRA release"
        )
    folders = sorted(markers, key=lambda f: (len(f.parts), f))
    if subfolder is not None:
        pattern = re.compile(subfolder, re.IGNORECASE)
        found = ", ".join(str(f) if f.parts else root or "." for f in folders)
        folders = [f for f in folders if pattern.search((PurePosixPath(root) / f).as_posix())]
        if not folders:
            raise InputError(
                f"{where}: no checkpoint folder matches {subfolder!r} (found {found}); "
                "pick one yourself"
            )
    same_depth = [str(f) for f in folders if len(f.parts) == len(folders[0].parts)]
    if len(same_depth) > 1:
        raise InputError(
            f"{where}: several checkpoint folders ({', '.join(same_depth)}); pick one yourself"
        )
    folder = folders[0]
    files = set(paths)
    # ELECTRA's run_pretraining keeps vocab.txt in its data folder, the checkpoints in
    # data/models/NAME/ (Ælæctra's zip may be laid out so): look up to the release's root.
    up = [folder, *folder.parents] if folder.parts else [folder]
    vocab = next((d / VOCAB_NAME for d in up if d / VOCAB_NAME in files), None)
    return Located(folder, markers[folder], vocab)


def locate(folder: Path, subfolder: str | None = None) -> UnpackResult:
    """Where the checkpoint and vocab are in an unpacked release `folder` (see
    pick_checkpoint_dir); nothing is unpacked."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    paths = [
        PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()
    ]
    return pick_checkpoint_dir(folder, paths, subfolder, folder.name).under(folder)


def locate_checkpoint_dir(folder: Path, subfolder: str | None = None) -> Path:
    """The folder under `folder` (or `folder` itself) holding the checkpoint."""
    return locate(folder, subfolder).checkpoint_dir


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
    subfolder: str | None = None,
) -> UnpackResult:
    """Extract `zip_path` into a new folder under `dest` and locate the checkpoint in it.

    The folder is the zip's single top-level folder (or the zip's stem when there is none).
    An existing folder holding a checkpoint is reused unless `force`. `subfolder` picks one
    of several checkpoint folders (see pick_checkpoint_dir).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    with open_zip(zip_path) as zf:
        top, entries = plan(zip_path, zf)
        total = check_size(zip_path, entries, max_total, max_ratio)
        target = dest / (top or zip_path.stem)
        files = [p for info, p in entries if not info.is_dir()]
        found = pick_checkpoint_dir(zip_path, files, subfolder, target.name)
        if not force and (target / found.marker).is_file():
            return found.under(target)
        try:
            _extract(zip_path, zf, entries, total, target, force, progress)
        except OutputExistsError:
            # Another unpack of a release finished first (`--from` takes no lock): use it.
            if force or not (target / found.marker).is_file():
                raise
            return found.under(target)
    return found.under(target, unpacked=True, nbytes=total)


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
