"""Shared fixtures: tiny TensorFlow-written checkpoints, made once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Nothing in the tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

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
def electra_release(tmp_path_factory: pytest.TempPathFactory):
    """Factory: electra_release(variant, hparams=None, **write_release kwargs) -> an ELECTRA
    release folder, each written once per session; a variant is one of tfckpt_electra.VARIANTS,
    or any new name with its `hparams`."""
    from tfckpt_electra import VARIANTS
    from tfckpt_electra import write_release as write_electra

    root = tmp_path_factory.mktemp("electra")
    made: dict[str, Path] = {}

    def make(variant: str, hparams: dict | None = None, **kwargs) -> Path:
        if variant not in made:
            made[variant] = write_electra(root / variant, hparams=hparams or VARIANTS[variant],
                                          **kwargs)  # fmt: skip
        return made[variant]

    return make


@pytest.fixture(scope="session")
def albert_release(tmp_path_factory: pytest.TempPathFactory):
    """Factory: albert_release(variant) -> an ALBERT release folder (tfckpt_albert.VARIANTS),
    each written once per session."""
    from tfckpt_albert import VARIANTS
    from tfckpt_albert import write_release as write_albert

    root = tmp_path_factory.mktemp("albert")
    made: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in made:
            config, kwargs = VARIANTS[variant]
            made[variant] = write_albert(root / variant, config, **kwargs)
        return made[variant]

    return make


@pytest.fixture
def local_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP tests talk to 127.0.0.1 only: a proxy from the environment would route it elsewhere."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture(scope="session")
def full_release(release) -> Path:
    """A two-layer checkpoint with MLM and NSP heads, Adam slots and global_step."""
    return release("full")


def sample_inputs(config: dict, seed: int = 1):
    """Two sequences: a padded single segment and a full two-segment pair."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seq = 10
    ids = rng.integers(5, config["vocab_size"], size=(2, seq))
    ids[:, 0] = 2  # [CLS]
    types = np.zeros((2, seq), dtype=np.int64)
    types[1, 5:] = 1
    mask = np.ones((2, seq), dtype=np.int64)
    mask[0, 6:] = 0
    ids[0, 6:] = 0  # [PAD]
    return ids, types, mask


def tf_reference(folder: Path, config: dict, hidden_act: str | None = None, seed: int = 1):
    """The numpy reference forward pass over the checkpoint's variables, read by TF name."""
    from danbert_convert.families.bert_reference import forward
    from danbert_convert.readers.tensorflow import TensorFlowReader

    reader = TensorFlowReader(folder / "bert_model.ckpt")
    names = reader.variables()
    ids, types, mask = sample_inputs(config, seed)
    return forward(reader.read, config, ids, types, mask, hidden_act=hidden_act,
                   has=names.__contains__)  # fmt: skip


@pytest.fixture(scope="session")
def modelgarden_release(tmp_path_factory: pytest.TempPathFactory):
    """Factory: modelgarden_release(kind="bert", layout="trainer", *, initializer_range=0.3,
    seed=0) -> a folder written by the TF Model Garden (tfckpt_tf2: kinds "bert", "bert_v2";
    LAYOUTS). One subprocess per (kind, initializer_range, seed) writes every layout at once.

    Without Model Garden in <venv>/modelgarden (make install-dev) the test is skipped, but
    fails under CI: a CI run must not pass by skipping these."""
    import tfckpt_tf2

    root = tmp_path_factory.mktemp("modelgarden")
    made: dict[tuple, dict[str, Path]] = {}

    def make(kind: str = "bert", layout: str = "trainer", *, initializer_range: float = 0.3,
             seed: int = 0) -> Path:  # fmt: skip
        if layout not in tfckpt_tf2.LAYOUTS:
            raise ValueError(f"layout must be one of {tfckpt_tf2.LAYOUTS}, not {layout!r}")
        reason = tfckpt_tf2.missing_reason()
        if reason:
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        key = (kind, initializer_range, seed)
        if key not in made:
            made[key] = tfckpt_tf2.write_modelgarden(
                root / f"{kind}-{initializer_range}-{seed}", kind,
                initializer_range=initializer_range, seed=seed,
            )  # fmt: skip
        return made[key][layout]

    return make
