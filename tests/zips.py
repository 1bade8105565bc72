"""Zip and tar builders for the fetch and unpack tests."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path


def zip_folder(folder: Path, zip_path: Path, top: str | None = None, junk: bool = False) -> Path:
    """Zip `folder`'s files under `top/` (as the Nordic BERT zips are laid out).

    With `junk`, add what macOS Archive Utility adds: a `__MACOSX/` tree and `._*` files.
    """
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        prefix = f"{top}/" if top else ""
        if top:
            z.writestr(prefix, b"")
        for f in sorted(folder.iterdir()):
            z.write(f, prefix + f.name)
            if junk:
                z.writestr(f"__MACOSX/{prefix}._{f.name}", b"\x00\x05\x16\x07junk")
                z.writestr(f"{prefix}._{f.name}", b"\x00\x05\x16\x07junk")
    return zip_path


def make_zip(
    zip_path: Path,
    entries: list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A zip holding exactly `entries`, names taken literally (unsafe ones included)."""
    with zipfile.ZipFile(zip_path, "w", compression) as z:
        for name, data in entries:
            z.writestr(name, data)
    return zip_path


def tar_folder(folder: Path, tar_path: Path, top: str | None = None, mode: str = "w:gz") -> Path:
    """Tar `folder`'s files, recursively, under `top/` (as ALBERT's tarballs are laid out)."""
    with tarfile.open(tar_path, mode) as t:
        t.add(folder, arcname=top or ".", recursive=True)
    return tar_path


def member(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    """A tar member named literally (unsafe names included), with TarInfo `attrs` (type=...)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data


def make_tar(
    tar_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz"
) -> Path:
    """A tar holding exactly `members`, written by tarfile (links, devices and all)."""
    with tarfile.open(tar_path, mode, format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return tar_path
