"""Zip builders for the fetch and unpack tests."""

from __future__ import annotations

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
