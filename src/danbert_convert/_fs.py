"""Filesystem helpers shared by the stages: atomic output folders and hashing."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, TypeAlias, TypeVar

if TYPE_CHECKING:
    from hashlib import _Hash

from danbert_convert.errors import DanbertError, InputError, OutputExistsError

log = logging.getLogger(__name__)

StrPath: TypeAlias = "str | os.PathLike[str]"
"""A path the public functions take: a str or a path object."""

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


def symlink_loop(path: Path) -> Path | None:
    """The first component of `path` that is a symlink loop (ELOOP), if any."""
    path = Path(path)
    for p in reversed([path, *path.parents]):  # from the root down
        try:
            os.stat(p)
        except OSError as e:
            return p if e.errno == errno.ELOOP else None
    return None


def check_no_loop(path: Path, error: type[DanbertError]) -> None:
    """Refuse a path that runs into a symlink loop, naming the looping component.

    Path.resolve raises RuntimeError on loops (Python 3.10-3.12) and os calls a bare ELOOP.
    """
    loop = symlink_loop(path)
    if loop is not None:
        where = "" if loop == Path(path) else f"{path}: "
        raise error(f"{where}{loop} is a symlink loop (too many levels of symbolic links)")


def check_writable_target(target: Path, force: bool) -> None:
    """Refuse an existing non-empty target unless forced; refuse a file where a folder goes."""
    check_no_loop(target, OutputExistsError)
    if target.is_symlink() and not target.exists():
        raise OutputExistsError(f"{target} is a symlink to {os.readlink(target)}, which is missing")
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
    that two paths are one folder. A symlink loop in the target or an input is refused.
    """
    check_no_loop(target, OutputExistsError)
    resolved = Path(target).resolve()
    try:
        root: os.stat_result | None = os.stat(target)
    except OSError:
        root = None
    for path in inputs:
        check_no_loop(path, InputError)
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


# Temporary siblings of an output folder: `.OUT.partial-<pid>-<hex>` while it is written,
# `.OUT.old-<pid>-<hex>` for the copy it replaces. The pid tells a later run whether the
# process that made one is gone, so that its leftovers (hundreds of MB) can be removed.
_SIBLING = r"\.{name}\.(?P<kind>partial|old)-(?P<pid>[0-9]+)-[0-9a-f]{{8}}\Z"
_active: set[Path] = set()  # this process's siblings in use (threads may share a parent)
_active_lock = threading.Lock()


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists; True when that cannot be told (keep what may be in use)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_symlink():  # an OUT that was a symlink was moved aside as the link itself
        path.unlink()
    else:
        shutil.rmtree(path)


def remove_stale_siblings(target: Path) -> None:
    """Remove `target`'s temporary siblings left by runs whose process is gone.

    A stale `.old-` copy is kept while `target` is missing: it may be the only copy left
    by a run killed between the two renames of the swap.
    """
    pattern = re.compile(_SIBLING.format(name=re.escape(target.name)))
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        path, pid = Path(entry.path), int(m["pid"])
        with _active_lock:
            if path in _active:
                continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if m["kind"] == "old" and not os.path.lexists(target):
            log.warning(f"{path} may be the previous {target} (a run was stopped replacing it)")
            continue
        try:
            _remove(path)
        except OSError as e:
            log.debug(f"could not remove {path}: {e}")
        else:
            log.info(f"removed {path}, left by an interrupted run (pid {pid})")


def _make_sibling(target: Path, kind: str) -> Path:
    """A new, empty sibling folder with the mode mkdir gives under the umask (and default ACLs)."""
    for _ in range(100):
        path = _sibling(target, kind)
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        with _active_lock:
            _active.add(path)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(_sibling(target, kind)))


@contextlib.contextmanager
def _interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C back (the signals received are listed) so that a rename pair is not split."""
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread, which alone receives Python's signal handlers
        yield received
        return
    try:
        yield received
    finally:
        # None: the handler was not set from Python; the default is the closest we can restore.
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _rename_unforced(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise OutputExistsError(
                f"{target} exists and is not empty (another run wrote it meanwhile; "
                "use --force to replace it)"
            ) from None
        if e.errno == errno.ENOTDIR:
            raise OutputExistsError(f"{target} exists and is not a folder") from None
        raise


@contextlib.contextmanager
def atomic_dir(
    target: Path, force: bool = False, keep: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success it replaces `target` by rename.

    `keep(name)`: an entry of the replaced `target` to move into the new one (when the new one
    has no entry of that name), such as a user's `.git` in a model folder; an entry that
    cannot be moved stays in the old copy, which is then kept and named in a warning.

    On any exception, KeyboardInterrupt included, the temporary folder is removed and
    `target` is left exactly as it was. Once the new `target` is in place, a failure to
    remove the old copy (Ctrl-C included) is only a warning: the next run removes it.
    The folder gets the mode mkdir gives (0o777 less the umask), not mkdtemp's 0o700.
    """
    target = Path(target)
    check_writable_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    tmp = _make_sibling(target, "partial")
    old: Path | None = None
    remove_old = True
    try:
        try:
            yield tmp
            with _interrupts_held() as received:
                if (
                    not force
                    and not os.path.islink(target)
                    and (os.name == "posix" or not os.path.lexists(target))
                ):
                    # Without force, what another run put at `target` since the check stays:
                    # rename(2) replaces only an empty folder, atomically.
                    _rename_unforced(tmp, target)
                # An old target moves aside first so that a failure here never loses both copies.
                elif os.path.lexists(target):
                    old = _sibling(target, "old")
                    with _active_lock:
                        _active.add(old)
                    os.replace(target, old)
                    try:
                        os.replace(tmp, target)
                    except BaseException:
                        os.replace(old, target)
                        raise
                    # What could not be moved stays, and so does the old copy that holds it.
                    remove_old = keep is None or _move_kept(old, target, keep)
                else:
                    os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if received:
            log.warning(f"interrupted after {target} was complete; it is kept")
        if old is not None and remove_old:
            try:
                _remove(old)
            except (Exception, KeyboardInterrupt) as e:
                log.warning(
                    f"{target} is complete, but removing the previous copy {old} failed "
                    f"({'interrupted' if isinstance(e, KeyboardInterrupt) else e}); "
                    f"the next run that writes {target} removes it"
                )
    finally:
        with _active_lock:
            _active.discard(tmp)
            if old is not None:
                _active.discard(old)


def _move_kept(old: Path, target: Path, keep: Callable[[str], bool]) -> bool:
    """Move `old`'s kept entries into `target` (renames: any size, same file system); False
    when one could not be moved (it is left in `old`)."""
    ok = True
    for name in sorted(os.listdir(old)):
        if keep(name) and not os.path.lexists(target / name):
            try:
                os.rename(old / name, target / name)
            except OSError as e:
                log.warning(f"{target}: could not keep {name} ({e}); it is in {old}")
                ok = False
    return ok


@contextlib.contextmanager
def blame(path: Path) -> Iterator[None]:
    """Make an OSError raised while writing `path` name it: a failed write() names no file."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


class HashingWriter:
    """A binary file being written whose SHA-256 follows the bytes written: no read-back."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.digest = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        # A buffered file writes all of `data` or raises: what is hashed is what was written.
        n = self.f.write(data)
        self.digest.update(data)
        return n

    def flush(self) -> None:
        self.f.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


_ItemT = TypeVar("_ItemT")


def leave_signals_to_main_thread() -> None:
    """Block Ctrl-C's SIGINT (and SIGTERM) in the calling worker thread.

    The kernel hands a process's signal to any thread that does not block it. Python runs the
    handler in the main thread only, and only wakes it from a blocking call (a socket read
    waiting for a stalled server, say) when the signal lands on the main thread itself; one
    that lands on a worker leaves Ctrl-C unanswered until that call times out.
    """
    if hasattr(signal, "pthread_sigmask"):  # POSIX; Windows delivers Ctrl-C differently
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


class Worker(Generic[_ItemT]):
    """Applies `fn` to queued items, in order, on its own thread.

    For work that releases the GIL on large buffers (hashing, writing, copying): it then
    overlaps the caller's next step on another core. The bounded queue caps what is held in
    memory. The first exception `fn` raises is kept, later items are dropped unprocessed, and
    `put` and `close` raise it in the caller's thread.
    """

    def __init__(self, fn: Callable[[_ItemT], object], name: str, depth: int = 2) -> None:
        self._fn = fn
        self._queue: queue.Queue[tuple[_ItemT] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        leave_signals_to_main_thread()
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stop.is_set():
                try:
                    self._fn(item[0])
                except BaseException as e:  # handed to the caller's thread, not lost
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: _ItemT) -> None:
        self._raise()
        self._queue.put((item,))

    def close(self) -> None:
        """Wait for every queued item to be processed; raise the first error, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop what is queued and wait for the item in progress (the caller is failing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._queue.put(None)  # the thread drains without working, so this cannot block long
            self._thread.join()


class BackgroundHasher:
    """A SHA-256 computed on a second thread (see Worker); hexdigest() waits for it."""

    def __init__(self, h: _Hash | None = None, depth: int = 64) -> None:
        self._h = h or hashlib.sha256()
        self._worker: Worker[Any] = Worker(self._h.update, "sha256", depth)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`, which the caller must not change afterwards."""
        self._worker.put(data)

    def close(self) -> None:
        self._worker.close()

    def abort(self) -> None:
        self._worker.abort()

    def hexdigest(self) -> str:
        self._worker.close()
        return self._h.hexdigest()


class PipelinedWriter:
    """A binary file written and SHA-256-hashed on two threads of their own.

    The caller prepares the next buffer (read, check, transpose) while the previous ones are
    copied into the page cache and hashed: three steps of similar cost that would otherwise
    run one after another. Buffers handed to write() must not change afterwards. A failed
    write raises, naming the file, from a later write() or from close().
    """

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.path = path
        self._hasher = BackgroundHasher(depth=2)
        self._writer: Worker[Any] = Worker(self._write_all, "write", depth=2)
        self._f = f
        self._digest: str | None = None

    def _write_all(self, data: memoryview) -> None:
        with blame(self.path):
            self._f.write(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._writer.put(data)
        self._hasher.update(data)

    def close(self) -> str:
        """Wait for both threads; return the hex SHA-256 of everything written."""
        if self._digest is None:
            try:
                self._writer.close()
            except BaseException:
                self._hasher.abort()
                raise
            self._digest = self._hasher.hexdigest()
        return self._digest

    def abort(self) -> None:
        self._writer.abort()
        self._hasher.abort()


@contextlib.contextmanager
def pipelined_writer(path: Path) -> Iterator[PipelinedWriter]:
    """Open `path` for a PipelinedWriter; its threads finish (or, on an exception, stop)
    before the file is closed, so nothing writes into a folder that is being removed."""
    with blame(path), open(path, "wb") as f:
        w = PipelinedWriter(f, path)
        try:
            yield w
            w.close()
        except BaseException:
            w.abort()
            raise


@contextlib.contextmanager
def hashing_writer(path: Path) -> Iterator[HashingWriter]:
    """Open `path` for writing; a failed write names it (see blame)."""
    with blame(path), open(path, "wb") as f:
        yield HashingWriter(f)


def write_bytes(path: Path, data: bytes) -> str:
    """Write `data` to `path`; return its SHA-256."""
    with hashing_writer(path) as w:
        w.write(data)
    return w.hexdigest()


def write_json(path: Path, obj: object) -> str:
    """Pretty, UTF-8 JSON with a final newline (config and manifest files people read).

    Returns the SHA-256 of the bytes written.
    """
    return write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())
