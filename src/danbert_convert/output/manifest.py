"""danbert-manifest.json: what a conversion read, wrote from what, and left out, and where
its source files were (relative paths, never absolute ones).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from danbert_convert.families.table import Plan

MANIFEST_NAME = "danbert-manifest.json"
# `danbert all`'s saved verify result, beside the manifest.
VERIFY_NAME = "danbert-verify.json"
# What pins the data shards' converted bytes when they are not hashed whole (--hash-sources).
DATA_CHECK = (
    "every converted tensor's bytes were checked against the CRC-32C that the (hashed) "
    ".index records for it; data shards carry a SHA-256 only with --hash-sources"
)
SCHEMA_VERSION = 2  # 2: paths relative to SRC (and SRC to OUT); 1: absolute paths


def in_folder(path: Path, folder: Path) -> str | None:
    """`path` relative to `folder` (POSIX separators) when it lies inside it, else None."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def source_root(src: Path, out: Path) -> str | None:
    """SRC relative to OUT ("../<...>"), or None when that path would name the folders
    above the user's home (the user name) or start at the file system root.

    The relative path shows only the names below the two folders' common ancestor.
    """
    # OUT itself may be a link that the conversion replaces: its parent is what stays.
    parent = Path(out).absolute().parent.resolve()
    source = Path(src).resolve()
    try:
        common = Path(os.path.commonpath([source, parent]))
    except ValueError:  # another drive (Windows)
        return None
    if common == Path(common.anchor) or common in Path.home().resolve().parents:
        return None
    return Path(os.path.relpath(source, parent / Path(out).name)).as_posix()


def source_paths(m: dict[str, Any], out: Path) -> dict[str, Path] | None:
    """Where the manifest says the checkpoint prefix, config and vocab were, if it can tell
    (no "config" key when the conversion read none: ELECTRA releases have none).

    Schema 2 records them relative to SRC and SRC relative to OUT (when it could); the
    schema-1 manifests of earlier versions hold absolute paths.
    """
    src = m.get("source", {})
    names = {k: src.get(k) for k in ("checkpoint", "config", "vocab")}
    if names["config"] is None and src.get("family", m.get("settings", {}).get("family")):
        del names["config"]  # a family that needs no config file, and none was read
    if not all(isinstance(v, str) and v for v in names.values()):
        return None
    if m.get("schema_version", 1) == 1:
        return {k: Path(v) for k, v in names.items()}
    root = src.get("root")
    if not isinstance(root, str):
        return None
    return {k: Path(out) / root / v for k, v in names.items()}


def manifest(
    *,
    plan: Plan,
    source: dict[str, object],
    outputs: dict[str, str],
    settings: dict[str, object],
    versions: dict[str, str],
    provenance: dict[str, object] | None = None,
) -> dict[str, object]:
    """danbert-manifest.json: what was read, what was written from what, and what was left out.

    `source` records paths relative to SRC (see convert), never absolute ones; `provenance`
    is where `danbert fetch` got SRC (None: not known).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": versions,
        "source": {**source, "data_check": DATA_CHECK},
        "provenance": provenance,
        "architecture": plan.architecture.name,
        "settings": settings,
        "outputs": outputs,
        "tensors": [
            {
                "name": t.hf,
                "source": t.tf,
                "transform": t.transform,
                "shape": list(t.shape),
                "dtype": t.dtype,
            }
            for t in plan.tensors
        ],  # fmt: skip
        "skipped": [{"name": n, "reason": r} for n, r in plan.skipped.items()],
    }


def danbert_files(folder: Path) -> set[str] | None:
    """The names of what danbert wrote in `folder` by its manifest (outputs, the manifest, the
    saved verify result, the card), or None when `folder` holds no readable manifest: then
    nothing in it is known to be ours, or anyone else's."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        outputs = data["outputs"]
        names = {str(name) for name in outputs}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names | {MANIFEST_NAME, VERIFY_NAME, "README.md"}
