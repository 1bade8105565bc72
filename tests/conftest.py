"""Shared fixtures: tiny TensorFlow-written checkpoints, made once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tfckpt import write_release  # noqa: E402


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory):
    """Factory: release(name, **write_release kwargs) -> folder, each variant written once."""
    root = tmp_path_factory.mktemp("releases")
    made: dict[str, Path] = {}

    def make(name: str = "full", **kwargs) -> Path:
        if name not in made:
            made[name] = write_release(root / name, **kwargs)
        return made[name]

    return make


@pytest.fixture(scope="session")
def full_release(release) -> Path:
    """A two-layer checkpoint with MLM and NSP heads, Adam slots and global_step."""
    return release("full")
