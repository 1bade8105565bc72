"""Zip and tar builders for the fetch and unpack tests."""

from __future__ import annotations

import io
import shutil
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


def albert_like_folder(release: Path, d: Path) -> Path:
    """ALBERT's tarball layout around the TF-written checkpoint of BERT-layout `release`:
    `d` holding model.ckpt-best.*, albert_config.json and 30k-clean.{model,vocab}, and the
    TF-Hub module's copy of the weights (saved_model.pb, variables/variables.*, assets/)."""
    (d / "variables").mkdir(parents=True)
    (d / "assets").mkdir()
    for f in release.glob("bert_model.ckpt.*"):
        suffix = f.name.removeprefix("bert_model.ckpt")
        shutil.copy(f, d / f"model.ckpt-best{suffix}")
        if suffix != ".meta":
            shutil.copy(f, d / "variables" / f"variables{suffix}")
    for folder in (d, d / "assets"):
        shutil.copy(release / "bert_config.json", folder / "albert_config.json")
        # A stand-in: only its name matters here (the ALBERT tests train a real one).
        (folder / "30k-clean.model").write_bytes(b"\x0a\x09\x0a\x05<pad>")
    (d / "30k-clean.vocab").write_text("<pad>\t0\n", encoding="utf-8")
    (d / "saved_model.pb").write_bytes(b"\x08\x01")
    return d
