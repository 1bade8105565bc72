"""Every module of the package imports on its own, in a fresh interpreter: no import cycles.

A cycle between two modules shows only when one of them is imported first, so each module
gets its own interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import danbert_convert

PACKAGE = Path(danbert_convert.__file__).parent
MODULES = sorted(
    "danbert_convert."
    + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)


def test_every_module_is_listed():
    assert "danbert_convert.readers.base" in MODULES and "danbert_convert.source" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                       env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr.strip().splitlines()[-1:]
