"""What a release carries: the licence, the changelog section the release workflow publishes,
one version everywhere. (`make dist` builds, installs and runs the wheel itself.)"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from danbert_convert import __version__

ROOT = Path(__file__).resolve().parents[1]
RELEASE_WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def release_notes_script() -> str:
    """The release workflow's shell step that cuts the changelog section out."""
    jobs = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]
    (step,) = [
        s for s in jobs["github-release"]["steps"] if "gh release create" in s.get("run", "")
    ]
    return step["run"].split("gh release create")[0]


def test_changelog_has_a_section_for_this_version_that_the_workflow_extracts(
    tmp_path: Path,
) -> None:
    (tmp_path / "CHANGELOG.md").write_bytes((ROOT / "CHANGELOG.md").read_bytes())
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", release_notes_script()],
        cwd=tmp_path, env={"GITHUB_REF_NAME": f"v{__version__}", "PATH": "/usr/bin:/bin"},
        check=True,
    )  # fmt: skip
    notes = (tmp_path / "notes.md").read_text()
    assert "### Added" in notes
    assert "## [" not in notes  # only this version's section, not the next one's


def test_release_workflow_checks_the_tag_against_the_version(tmp_path: Path) -> None:
    jobs = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]
    (step,) = [s for s in jobs["build"]["steps"] if s.get("name", "").startswith("The tag")]
    (tmp_path / "src" / "danbert_convert").mkdir(parents=True)
    init = (ROOT / "src" / "danbert_convert" / "__init__.py").read_text()
    (tmp_path / "src" / "danbert_convert" / "__init__.py").write_text(init)

    def run(tag: str) -> int:
        env = {"GITHUB_REF_NAME": tag, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
        return subprocess.run(["bash", "-c", step["run"]], cwd=tmp_path, env=env).returncode

    assert run(f"v{__version__}") == 0
    assert run("v0.0.0-not-this") != 0


def test_publishing_uses_trusted_publishing_without_a_token() -> None:
    jobs = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    (step,) = publish["steps"][-1:]
    assert step["uses"].startswith("pypa/gh-action-pypi-publish@")
    assert "with" not in step or "password" not in step["with"]


def test_one_version_everywhere() -> None:
    assert importlib.metadata.version("danbert-convert") == __version__
    out = subprocess.run(
        [sys.executable, "-m", "danbert_convert", "--version"], capture_output=True, text=True
    )
    assert out.stdout.split()[-1] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


@pytest.mark.parametrize("what", ["wheel", "sdist"])
def test_the_licence_is_in_what_is_published(tmp_path: Path, what: str) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "build", f"--{what}", "--no-isolation", "--outdir", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    licence = (ROOT / "LICENSE").read_bytes()
    if what == "wheel":
        (wheel,) = tmp_path.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            assert zf.read(f"danbert_convert-{__version__}.dist-info/licenses/LICENSE") == licence
            metadata = zf.read(f"danbert_convert-{__version__}.dist-info/METADATA").decode()
            for name in ("NOTICE", "LICENSES/CC-BY-SA-4.0.txt"):
                path = f"danbert_convert-{__version__}.dist-info/licenses/{name}"
                assert zf.read(path) == (ROOT / name).read_bytes()
        assert "License-Expression: MIT AND CC-BY-SA-4.0" in metadata
    else:
        import tarfile

        (sdist,) = tmp_path.glob("*.tar.gz")
        with tarfile.open(sdist) as tf:
            names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
            member = tf.extractfile(f"danbert_convert-{__version__}/LICENSE")
            assert member is not None and member.read() == licence
        assert {"CHANGELOG.md", "README.md", "pyproject.toml", "NOTICE"} <= names
        assert "LICENSES/CC-BY-SA-4.0.txt" in names
        assert not [n for n in names if n.startswith("benchmarks/.cache")]


def test_release_refuses_an_undated_or_empty_changelog_section(tmp_path: Path) -> None:
    """The step runs as written: today's '## [0.1.0] - not yet released' must stop a release."""
    jobs = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]
    (step,) = [s for s in jobs["build"]["steps"] if s.get("name", "").startswith("CHANGELOG")]

    def run(changelog: str) -> int:
        (tmp_path / "CHANGELOG.md").write_text(changelog)
        env = {"GITHUB_REF_NAME": "v1.2.3", "PATH": "/usr/bin:/bin"}
        return subprocess.run(["bash", "-c", step["run"]], cwd=tmp_path, env=env).returncode

    dated = "# Changelog\n\n## [1.2.3] - 2027-01-31\n\n### Fixed\n- a thing\n\n## [1.2.2] - x\n"
    assert run(dated) == 0
    assert run(dated.replace("2027-01-31", "not yet released")) != 0
    assert run(dated.replace("### Fixed\n- a thing\n", "")) != 0
    assert run(dated.replace("[1.2.3]", "[1.2.30]")) != 0
    assert run((ROOT / "CHANGELOG.md").read_text().replace(__version__, "1.2.3")) != 0
