"""Safe extraction of a release archive (zip, or tar: .tar.gz, .tgz, .tar), and locating the
checkpoint folder inside it.

The archive is checked as a whole before anything is written (paths, links, size, ratio and
count caps, a checkpoint folder somewhere), then extracted into a temporary sibling of the
target that is renamed into place only when every entry has been read and checked (a zip's
CRCs; a tar's sizes, end-of-archive marker and gzip CRC). Which kind an archive is, its first
bytes say, not its name.

A tar(.gz) has no central directory: it is read twice as a stream, once to check and list it
(this alone decompresses all of it), once to extract what was listed. Every decompressed byte
is counted both times, headers and padding included, and reading stops at a cap: what a gzip
bomb would expand to is never held or written.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, cast

from tqdm import tqdm

from danbert_convert._fs import atomic_dir
from danbert_convert.errors import InputError, OutputExistsError, one_line

CONFIG_NAME = "bert_config.json"
ALBERT_CONFIG_NAME = "albert_config.json"
"""ALBERT's config, which marks its checkpoint folder as bert_config.json marks BERT's."""
STATE_NAME = "checkpoint"
"""TensorFlow's checkpoint state file, beside the checkpoints it lists."""
VOCAB_NAME = "vocab.txt"
SPM_SUFFIX = ".model"
"""A SentencePiece model (ALBERT's 30k-clean.model): the vocab of a release without vocab.txt."""
MAX_TOTAL = 8 << 30
"""Default cap on the uncompressed size; the Danish v2 release unpacks to about 1.4 GB."""
MAX_RATIO = 200.0
"""Default cap on one entry's compression ratio; checkpoint floats barely compress."""
RATIO_MIN_SIZE = 1 << 20
"""Entries smaller than this are never refused for their ratio: they cannot fill a disk."""
MAX_MEMBERS = 10_000
"""Default cap on the entries of an archive; a release holds a dozen or so."""
TAR_HEADER_MAX = 1 << 20
"""Cap on one tar member's headers (pax, GNU long names), which tarfile reads into memory."""
TAR_SLACK = 32 << 20
"""Decompressed bytes of a tar allowed beyond `max_total`: headers and padding."""

ArchiveFormat = Literal["zip", "tar"]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Regular files and folders only: links, devices, FIFOs, sparse and unknown types are refused.
_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class ArchiveCorruptError(InputError):
    """The archive's bytes are damaged (truncated, bad CRC), as opposed to a well-formed
    archive that is refused for what it holds."""


ZipCorruptError = ArchiveCorruptError
"""The former name, from when only zips were unpacked."""


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
    spm_model: Path | None = None
    """When there is no vocab.txt: the SentencePiece `*.model` found the same way (ALBERT's
    30k-clean.model), if exactly one is in the folder where the search stops."""


def archive_format(path: Path) -> ArchiveFormat:
    """ "zip" or "tar" (plain or gzip-compressed) from the file's first bytes; a file that is
    neither goes by its name (and then fails to open as what it says it is)."""
    try:
        with open(path, "rb") as f:
            head = f.read(tarfile.BLOCKSIZE)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head[:2] == _GZIP_MAGIC or head[257:262] == b"ustar":
        return "tar"
    return "tar" if path.name.lower().endswith(_TAR_SUFFIXES) else "zip"


def looks_like_archive(head: bytes) -> bool:
    """Whether a file's first bytes are a zip's, a gzip's or (given 262 of them) a tar's."""
    return head[:4] in _ZIP_MAGIC or head[:2] == _GZIP_MAGIC or head[257:262] == b"ustar"


def why_not_whole(path: Path, cap: int = MAX_TOTAL + TAR_SLACK) -> str | None:
    """Why a downloaded archive is cut short, or None: a zip's central directory must read,
    a gzip must decompress to its end and trailer (at most `cap` bytes are decompressed;
    beyond, unpacking refuses it). A plain tar's end is checked when it is unpacked."""
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    if head[:2] == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as gz:
                n = 0
                while n <= cap and (chunk := gz.read(_CHUNK)):
                    n += len(chunk)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            return f"not a whole gzip ({one_line(e)})"
        return None
    if head[257:262] == b"ustar":
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
        return f"not a whole zip ({one_line(e)})"
    return None


def archive_stem(name: str) -> str:
    """The archive's name without .zip, .tar.gz, .tgz or .tar (the folder of a flat archive)."""
    low = name.lower()
    for suffix in (".zip", *_TAR_SUFFIXES):
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def member_path(archive: Path, name: str) -> PurePosixPath | None:
    """An entry's relative path, None for macOS junk; InputError for an absolute path or `..`."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or _DRIVE.match(clean):
        raise InputError(f"{archive}: entry {name!r} has an absolute path; refusing it")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{archive}: entry {name!r} points outside the folder (..)")
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def entry_path(zip_path: Path, info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The entry's relative path, None for macOS junk; InputError for unsafe entries."""
    path = member_path(zip_path, info.filename)
    if path is not None and stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"{zip_path}: entry {info.filename!r} is a symbolic link; refusing it")
    return path


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
    """A file that only a checkpoint folder holds: BERT's or ALBERT's config, a TF
    checkpoint's index or state file (ELECTRA releases have no config)."""
    return _holds_checkpoint(name) or name in (CONFIG_NAME, ALBERT_CONFIG_NAME)


def _holds_checkpoint(name: str) -> bool:
    return name == STATE_NAME or name.endswith(".index")


@dataclass(frozen=True)
class Located:
    """A checkpoint folder found among a release's files, paths relative to the release."""

    folder: PurePosixPath
    marker: PurePosixPath
    """A file in `folder` that marks it (its presence says an unpack is already there)."""
    vocab: PurePosixPath | None
    spm_model: PurePosixPath | None = None

    def under(self, root: Path, unpacked: bool = False, nbytes: int = 0) -> UnpackResult:
        """The result for the release unpacked (or found) at `root`."""
        vocab = root / self.vocab if self.vocab is not None else None
        spm = root / self.spm_model if self.spm_model is not None else None
        return UnpackResult(root, root / self.folder, unpacked, nbytes, vocab, spm)


def pick_checkpoint_dir(
    where: object, paths: list[PurePosixPath], subfolder: str | None = None, root: str = ""
) -> Located:
    """The shallowest folder among `paths` holding a checkpoint (a `*.index`, a `checkpoint`
    state file, a bert_config.json or albert_config.json), and its vocab.txt (there, else the
    nearest above it; failing that, a SentencePiece `*.model` found the same way).

    At one depth a folder with a checkpoint beats one with a config alone. So ALBERT's
    tarballs give their top folder (model.ckpt-best.*), not the TF-Hub copy of the same
    weights in its variables/ folder, nor assets/ (a config and 30k-clean.model).

    `subfolder`, a regular expression searched case-insensitively in each folder's path
    (below `root`, the release folder's name), chooses among several (a zip holding variants).
    InputError naming `where` if there is no checkpoint folder, none matches, or several
    remain at the same depth.
    """
    markers: dict[PurePosixPath, PurePosixPath] = {}
    checkpoints: set[PurePosixPath] = set()
    for p in sorted(paths):
        if _marks_checkpoint(p.name):
            markers.setdefault(p.parent, p)
        if _holds_checkpoint(p.name):
            checkpoints.add(p.parent)
    if not markers:
        raise InputError(
            f"{where}: no {CONFIG_NAME} inside, nor {ALBERT_CONFIG_NAME} or a TensorFlow "
            "checkpoint (*.index); not a BERT, ALBERT or ELECTRA release"
        )
    folders = sorted(markers, key=lambda f: (len(f.parts), f not in checkpoints, f))
    if subfolder is not None:
        pattern = re.compile(subfolder, re.IGNORECASE)
        found = ", ".join(str(f) if f.parts else root or "." for f in folders)
        folders = [f for f in folders if pattern.search((PurePosixPath(root) / f).as_posix())]
        if not folders:
            raise InputError(
                f"{where}: no checkpoint folder matches {subfolder!r} (found {found}); "
                "pick one yourself"
            )
    same_depth = [
        str(f)
        for f in folders
        if len(f.parts) == len(folders[0].parts)
        and (f in checkpoints) == (folders[0] in checkpoints)
    ]
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
    spm = None
    if vocab is None:
        for d in up:
            models = sorted(p for p in files if p.parent == d and p.name.endswith(SPM_SUFFIX))
            if models:
                spm = models[0] if len(models) == 1 else None
                break
    return Located(folder, markers[folder], vocab, spm)


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
        raise ArchiveCorruptError(
            f"{zip_path}: not a zip file or truncated (no readable central directory: {e})"
        ) from None


def _single_top(paths: list[tuple[PurePosixPath, bool]]) -> str | None:
    """The one top-level folder that every (path, is_dir) lies in, None if there is none."""
    tops = {p.parts[0] for p, _ in paths}
    if len(tops) == 1 and all(len(p.parts) > 1 or is_dir for p, is_dir in paths):
        return tops.pop()
    return None


def _check_count(archive: Path, n: int, max_members: int) -> None:
    if n > max_members:
        raise InputError(f"{archive}: holds more than {max_members} entries; refusing it")


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
    top = _single_top([(p, info.is_dir()) for info, p in entries])
    if top is not None:
        stripped = [(i, PurePosixPath(*p.parts[1:])) for i, p in entries if len(p.parts) > 1]
        return top, stripped
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
        raise ArchiveCorruptError(
            f"{zip_path}: entry {info.filename!r} is corrupt or truncated: {e}"
        ) from None
    except (NotImplementedError, RuntimeError) as e:  # an unsupported method, encryption
        raise InputError(f"{zip_path}: entry {info.filename!r} cannot be read: {e}") from None
    if n != info.file_size:
        raise ArchiveCorruptError(
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
    max_members: int = MAX_MEMBERS,
    subfolder: str | None = None,
) -> UnpackResult:
    """Extract the archive `zip_path` (a zip or a tar, plain or gzip-compressed: its first
    bytes say which) into a new folder under `dest` and locate the checkpoint in it.

    The folder is the archive's single top-level folder (or the archive's name without .zip,
    .tar.gz, .tgz or .tar when there is none). An existing folder holding a checkpoint is
    reused unless `force`. `subfolder` picks one of several checkpoint folders (see
    pick_checkpoint_dir). `max_ratio` applies to a zip's entries; a tar's decompressed bytes
    are counted instead (see the module's docstring).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if archive_format(zip_path) == "tar":
        return _unpack_tar(zip_path, dest, force, progress, max_total, max_members, subfolder)
    with open_zip(zip_path) as zf:
        _check_count(zip_path, len(zf.infolist()), max_members)
        top, entries = plan(zip_path, zf)
        total = check_size(zip_path, entries, max_total, max_ratio)
        target = dest / (top or archive_stem(zip_path.name))
        files = [p for info, p in entries if not info.is_dir()]
        found = pick_checkpoint_dir(zip_path, files, subfolder, target.name)

        def write(tmp: Path, bar: tqdm) -> None:
            root = tmp.resolve()
            for info, rel in entries:
                out = _make_parent(zip_path, info.filename, tmp, root, rel, info.is_dir())
                if not info.is_dir():
                    extract_entry(zip_path, zf, info, out, bar)

        return _install(zip_path, target, found, total, force, progress, write)


def _install(
    archive: Path,
    target: Path,
    found: Located,
    total: int,
    force: bool,
    progress: bool | None,
    write: Callable[[Path, tqdm], None],
    same: Callable[[Path], None] | None = None,
) -> UnpackResult:
    """Reuse an earlier unpack at `target`, or `write` the archive's files into a temporary
    sibling of `target` that then replaces it. `same(target)` raises OutputExistsError when
    the earlier unpack is not this archive's."""
    if not force and (target / found.marker).is_file():
        if same is not None:
            same(target)
        return found.under(target)
    try:
        with (
            atomic_dir(target, force=force) as tmp,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"unpacking {archive.name}",
                disable=_disable(progress),
                leave=False,
            ) as bar,
        ):
            write(tmp, bar)
    except OutputExistsError:
        # Another unpack of a release finished first (`--from` takes no lock): use it.
        if force or not (target / found.marker).is_file():
            raise
        if same is not None:
            same(target)
        return found.under(target)
    return found.under(target, unpacked=True, nbytes=total)


def _make_parent(
    archive: Path, name: str, tmp: Path, root: Path, rel: PurePosixPath, is_dir: bool
) -> Path:
    """Where entry `name` goes under `tmp`, with its folder (or itself, a folder) made."""
    out = tmp / rel
    # Belt and braces: member_path already refused every way out that we know of.
    if not out.resolve().is_relative_to(root):
        raise InputError(f"{archive}: entry {name!r} resolves outside")
    try:
        (out if is_dir else out.parent).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"{archive}: entry {name!r} clashes with a file of the same name"
        ) from None
    return out


class _Counted:
    """A tar's decompressed byte stream, as tarfile reads it: every byte counted, none past
    `cap`, none past `limit` while a member's headers are read (tarfile holds them in
    memory). The last chunks are kept to check what follows the last member."""

    def __init__(self, src: BinaryIO, archive: Path, cap: int) -> None:
        self.src, self.archive, self.cap = src, archive, cap
        self.count = 0
        self.limit: int | None = TAR_HEADER_MAX + tarfile.RECORDSIZE
        self.after: str | None = None
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=8)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.src.read(n if n >= 0 else _CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise ArchiveCorruptError(
                f"{self.archive}: the gzip stream is corrupt or truncated ({e})"
            ) from None
        start = self.count
        self.count += len(data)
        if self.count > self.cap:
            raise InputError(
                f"{self.archive}: decompresses to more than {self.cap} bytes, over the limit; "
                "refusing a possible gzip bomb"
            )
        if self.limit is not None and self.count > self.limit:
            where = f"after entry {self.after!r}" if self.after is not None else "at its start"
            raise InputError(
                f"{self.archive}: an entry's headers {where} exceed {TAR_HEADER_MAX} bytes; "
                "refusing it"
            )
        if data:
            self.recent.append((start, data))
        return data

    def check_end(self, offset: int) -> None:
        """Read to the end: from `offset`, where tarfile found no further member, only zeros
        may follow (the end-of-archive blocks and padding), at least one block of them.
        Reading to the end also checks a gzip's CRC and length."""
        ok = bool(self.recent) and self.recent[0][0] <= offset
        if ok:
            tail = b"".join(d for _, d in self.recent)[offset - self.recent[0][0] :]
            ok = not tail.strip(b"\0")
        end = self.count
        while ok and (chunk := self.read(_CHUNK)):
            ok = not chunk.strip(b"\0")
            end = self.count
        if not ok or end < offset + tarfile.BLOCKSIZE:
            raise ArchiveCorruptError(
                f"{self.archive}: damaged or truncated at byte {offset} of the tar "
                f"(after entry {self.after!r}): no end-of-archive marker"
            )


@contextlib.contextmanager
def _tar_members(archive: Path, cap: int, max_members: int) -> Iterator[_TarReader]:
    """Open `archive` as a tar stream, decompressing a gzip ourselves (so that every byte is
    counted, see _Counted) and nothing else (a gzip inside is not a tar)."""
    with open(archive, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        src: BinaryIO = raw
        if gzipped:
            src = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        counted = _Counted(src, archive, cap)
        try:
            tf = tarfile.open(fileobj=cast(BinaryIO, counted), mode="r|")  # noqa: SIM115 (with tf below)
        except tarfile.TarError as e:
            raise ArchiveCorruptError(f"{archive}: not a tar archive, or damaged ({e})") from None
        with tf:
            yield _TarReader(archive, tf, counted, max_members)


class _TarReader:
    def __init__(
        self, archive: Path, tf: tarfile.TarFile, counted: _Counted, max_members: int
    ) -> None:
        self.archive, self.tf, self.counted, self.max_members = archive, tf, counted, max_members

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        """Each member in turn; at the end, the end-of-archive check (see _Counted)."""
        tf, counted = self.tf, self.counted
        n, skip = 0, 0
        while True:
            # What the member before may still have unread, then its successor's headers.
            counted.limit = counted.count + skip + TAR_HEADER_MAX + tarfile.RECORDSIZE
            try:
                m = tf.next()
            except tarfile.TarError as e:
                where = f"after entry {counted.after!r}" if counted.after else "at its start"
                raise ArchiveCorruptError(
                    f"{self.archive}: damaged or truncated {where} ({e})"
                ) from None
            counted.limit = None
            if m is None:
                break
            n += 1
            _check_count(self.archive, n, self.max_members)
            yield m
            counted.after, skip = m.name, max(m.size, 0) + tarfile.BLOCKSIZE
        counted.check_end(tf.offset)


def _check_member(archive: Path, m: tarfile.TarInfo, dest: Path) -> PurePosixPath | None:
    """A tar member's relative path (None for macOS junk); InputError for anything but a
    regular file or folder inside the release."""
    rel = member_path(archive, m.name)
    what = (
        "a symbolic link"
        if m.issym()
        else "a hard link"
        if m.islnk()
        else "a device"
        if m.ischr() or m.isblk()
        else "a FIFO"
        if m.isfifo()
        else "a sparse file"
        if m.issparse()
        else None
    )
    if what is None and not (m.isdir() or m.type in _TAR_FILE_TYPES):
        what = f"not a regular file or folder (type {m.type!r})"
    if what is not None:
        raise InputError(f"{archive}: entry {m.name!r} is {what}; refusing it")
    if m.size < 0:
        raise ArchiveCorruptError(f"{archive}: entry {m.name!r} has a negative size")
    # Second line: Python's own extraction filter, where this Python has it (3.12, and
    # security releases of 3.10 and 3.11); the checks above stand alone without it.
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(m, str(dest))
        except getattr(tarfile, "FilterError") as e:  # noqa: B009 (absent where the filter is)
            raise InputError(f"{archive}: entry {m.name!r} refused: {e}") from None
    return rel


def _unpack_tar(
    archive: Path,
    dest: Path,
    force: bool,
    progress: bool | None,
    max_total: int,
    max_members: int,
    subfolder: str | None,
) -> UnpackResult:
    cap = max_total + TAR_SLACK
    # First pass: check and list every member; nothing is written.
    listing: list[tuple[str, int, bytes, PurePosixPath | None]] = []
    mtimes: list[int] = []
    total = 0
    seen: set[PurePosixPath] = set()
    with _tar_members(archive, cap, max_members) as reader:
        for m in reader:
            rel = _check_member(archive, m, dest)
            if rel is not None and not m.isdir():
                if rel in seen:
                    raise InputError(f"{archive}: entry {m.name!r} appears twice")
                total += m.size
                if total > max_total:
                    raise InputError(
                        f"{archive}: unpacks to more than {max_total} bytes (entry {m.name!r} "
                        f"declares {m.size}); refusing a possible tar bomb"
                    )
            if rel is not None:
                seen.add(rel)
            listing.append((m.name, m.size, m.type, rel))
            mtimes.append(int(m.mtime))
    kept = [(rel, t == tarfile.DIRTYPE) for _, _, t, rel in listing if rel is not None]
    if not kept:
        raise InputError(f"{archive}: the archive holds no files")
    top = _single_top(kept)
    target = dest / (top or archive_stem(archive.name))
    strip = 1 if top is not None else 0
    files = [PurePosixPath(*rel.parts[strip:]) for rel, is_dir in kept if not is_dir]
    found = pick_checkpoint_dir(archive, files, subfolder, target.name)
    files_meta = [
        (name, size, mtime, PurePosixPath(*rel.parts[strip:]))
        for (name, size, kind, rel), mtime in zip(listing, mtimes, strict=True)
        if rel is not None and kind != tarfile.DIRTYPE
    ]

    def write(tmp: Path, bar: tqdm) -> None:
        # Second pass: the same members again (the file may have changed), written out.
        root = tmp.resolve()
        with _tar_members(archive, cap, max_members) as reader:
            planned = iter(listing)
            for m in reader:
                name, size, kind, rel = next(planned, ("", -1, b"", None))
                if (m.name, m.size, m.type) != (name, size, kind):
                    raise InputError(f"{archive}: changed while it was being unpacked")
                if rel is None or len(rel.parts) <= strip:
                    continue
                rel = PurePosixPath(*rel.parts[strip:])
                out = _make_parent(archive, m.name, tmp, root, rel, m.isdir())
                if not m.isdir():
                    _extract_member(archive, reader.tf, m, out, bar)
                    # Kept for `same` below; an absurd time only stops reuse later.
                    with contextlib.suppress(OverflowError, OSError, ValueError):
                        os.utime(out, (m.mtime, m.mtime))
            if next(planned, None) is not None:
                raise InputError(f"{archive}: changed while it was being unpacked")

    def same(folder: Path) -> None:
        # ALBERT's v1 and v2 tarballs both unpack to albert_base/ (and so on): an earlier
        # unpack is this archive's only if its files have this archive's sizes and times.
        for name, size, mtime, rel in files_meta:
            p = folder / rel
            st = p.stat() if p.is_file() else None
            # (FAT keeps times to 2 s)
            if st is None or st.st_size != size or abs(int(st.st_mtime) - mtime) > 2:
                raise OutputExistsError(
                    f"{folder} holds another release or a changed copy ({p.name} is not "
                    f"{archive.name}'s {name!r}); use --force to replace it, or another --dest"
                )

    return _install(archive, target, found, total, force, progress, write, same)


def _extract_member(
    archive: Path, tf: tarfile.TarFile, m: tarfile.TarInfo, out: Path, bar: tqdm
) -> None:
    """Write the current member of a tar stream to `out`; InputError naming it."""
    n = 0
    try:
        src = tf.extractfile(m)
        if src is None:
            raise InputError(f"{archive}: entry {m.name!r} cannot be read")
        with src, open(out, "xb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    except FileExistsError:
        raise InputError(f"{archive}: entry {m.name!r} appears twice") from None
    except tarfile.TarError as e:
        raise ArchiveCorruptError(
            f"{archive}: entry {m.name!r} is corrupt or truncated: {e}"
        ) from None
    if n != m.size:
        raise ArchiveCorruptError(
            f"{archive}: entry {m.name!r} holds {n} bytes, its header says {m.size}"
        )


def _disable(progress: bool | None) -> bool | None:
    """tqdm's `disable` from our tri-state: True on, False off, None when stderr is a TTY."""
    return None if progress is None else not progress
