"""Locating the checkpoint in ELECTRA release zips (no bert_config.json), Google's one-folder
layout and Ælæctra's two variants in one zip, unpacked directly and fetched over real HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from httpserver import Behaviour, Server
from tfckpt_electra import write_release
from zips import make_zip, zip_folder

from danbert_convert.errors import InputError
from danbert_convert.releases.archive import unpack
from danbert_convert.releases.registry import RELEASES
from danbert_convert.stages.fetch import fetch

FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": (2.0, 2.0)}
CASED, UNCASED = RELEASES["aelaectra-danish-cased"], RELEASES["aelaectra-danish-uncased"]


def zip_tree(root: Path, zip_path: Path) -> Path:
    """Every file below `root`, by its path relative to `root`."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return make_zip(zip_path, [(p.relative_to(root).as_posix(), p.read_bytes()) for p in files])


def tf_prefix(folder: Path) -> str | None:
    """The checkpoint TensorFlow itself finds in `folder` (its `checkpoint` state file)."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(folder))


@pytest.fixture(scope="session")
def electra_small_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Laid out as google-research/electra's README says: one top folder electra_small/ with
    `checkpoint`, model.ckpt-N.* and vocab.txt, no config."""
    root = tmp_path_factory.mktemp("electra")
    folder = write_release(root / "electra_small", training_state=False)
    return zip_folder(folder, root / "electra_small.zip", "electra_small")


@pytest.fixture(scope="session")
def aelaectra_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both variants as ELECTRA's run_pretraining leaves a data folder: DATA/vocab.txt and the
    checkpoints in DATA/models/NAME/ (the real zip's layout is unconfirmed); each variant
    with its own vocab so the test can tell them apart."""
    root = tmp_path_factory.mktemp("aelaectra")
    for seed, casing in enumerate(("cased", "uncased")):
        data = root / "tree" / "Ælæctra" / f"ælæctra_{casing}_32k"
        write_release(data / "models" / f"ælæctra_{casing}_32k", training_state=False, seed=seed)
        (data / "models" / f"ælæctra_{casing}_32k" / "vocab.txt").rename(data / "vocab.txt")
        (data / "vocab.txt").write_text(f"[PAD]\n{casing}\n", encoding="utf-8")
    return zip_tree(root / "tree", root / "aelaectra.zip")


def test_google_electra_zip(electra_small_zip: Path, tmp_path: Path) -> None:
    r = unpack(electra_small_zip, tmp_path)
    assert r.unpacked and r.checkpoint_dir == tmp_path / "electra_small"
    assert r.vocab == r.checkpoint_dir / "vocab.txt"
    assert tf_prefix(r.checkpoint_dir) == str(r.checkpoint_dir / "model.ckpt-1000")
    again = unpack(electra_small_zip, tmp_path)
    assert not again.unpacked and again.checkpoint_dir == r.checkpoint_dir


def test_two_variants_need_a_choice(aelaectra_zip: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        unpack(aelaectra_zip, tmp_path)
    assert str(e.value) == (
        f"{aelaectra_zip}: several checkpoint folders (ælæctra_cased_32k/models/ælæctra_cased_32k,"
        " ælæctra_uncased_32k/models/ælæctra_uncased_32k); pick one yourself"
    )


@pytest.mark.parametrize("release", [CASED, UNCASED], ids=lambda r: r.name)
def test_the_registry_hint_picks_the_variant(aelaectra_zip: Path, tmp_path: Path, release) -> None:
    casing = "cased" if release.cased else "uncased"
    r = unpack(aelaectra_zip, tmp_path, subfolder=release.subfolder)
    data = tmp_path / "Ælæctra" / f"ælæctra_{casing}_32k"
    assert r.checkpoint_dir == data / "models" / f"ælæctra_{casing}_32k"
    assert tf_prefix(r.checkpoint_dir) == str(r.checkpoint_dir / "model.ckpt-1000")
    # The vocab two folders up, the variant's own.
    assert r.vocab == data / "vocab.txt"
    assert r.vocab.read_text(encoding="utf-8").split() == ["[PAD]", casing]


def test_a_hint_that_matches_nothing(electra_small_zip: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        unpack(electra_small_zip, tmp_path, subfolder=CASED.subfolder)
    assert str(e.value) == (
        f"{electra_small_zip}: no checkpoint folder matches '(?<!un)cased' (found "
        "electra_small); pick one yourself"
    )
    assert not (tmp_path / "electra_small").exists()


def test_a_zip_without_any_checkpoint(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "nockpt.zip", [("rel/vocab.txt", b"a\n"), ("rel/README", b"hi")])
    with pytest.raises(InputError) as e:
        unpack(z, tmp_path / "dest")
    assert str(e.value) == (
        f"{z}: no bert_config.json inside, nor albert_config.json or a TensorFlow checkpoint "
        "(*.index); not a BERT, ALBERT or ELECTRA release"
    )
    assert not (tmp_path / "dest").exists()


@pytest.mark.usefixtures("local_network")
def test_both_variants_fetched_from_one_download(aelaectra_zip: Path, tmp_path: Path) -> None:
    """Two registry entries, one zip: the second fetch reuses the download and the unpacked
    folder, and takes its own variant from it; `--from` the unpacked folder does the same."""
    data = aelaectra_zip.read_bytes()
    with Server() as server:
        url = server.route("/%C3%86l%C3%A6ctra.zip", Behaviour(body=data))
        uncased = fetch(UNCASED.name, tmp_path, urls=[url], **FAST)
        cased = fetch(CASED.name, tmp_path, urls=[url], **FAST)
        assert len(server.requests_to("/%C3%86l%C3%A6ctra.zip")) == 1
    assert uncased.zip_path == cased.zip_path == tmp_path / "aelaectra.zip"
    assert uncased.downloaded and uncased.unpacked and not cased.downloaded and not cased.unpacked
    assert uncased.sha256 == cased.sha256 == hashlib.sha256(data).hexdigest()
    top = tmp_path / "Ælæctra"
    for r, casing in ((uncased, "uncased"), (cased, "cased")):
        assert (
            r.checkpoint_dir == top / f"ælæctra_{casing}_32k" / "models" / f"ælæctra_{casing}_32k"
        )
        assert r.vocab == top / f"ælæctra_{casing}_32k" / "vocab.txt"
        assert r.to_dict()["vocab"] == str(r.vocab)
    local = fetch(CASED.name, tmp_path / "unused", from_path=top)
    assert (local.checkpoint_dir, local.vocab) == (cased.checkpoint_dir, cased.vocab)
    with pytest.raises(InputError, match=r"Ælæctra: several checkpoint folders \("):
        fetch(dest=tmp_path / "unused", from_path=top)


def test_the_hint_sees_the_top_folder(electra_small_zip: Path, tmp_path: Path) -> None:
    """A zip of one variant, named by its top folder: the hint matches that name."""
    folder = tmp_path / "src"
    unpack(electra_small_zip, folder)
    z = zip_folder(folder / "electra_small", tmp_path / "one.zip", "Ælæctra_Cased")
    r = unpack(z, tmp_path / "dest", subfolder=CASED.subfolder)
    assert r.checkpoint_dir == tmp_path / "dest" / "Ælæctra_Cased"
    with pytest.raises(
        InputError,
        match=r"one\.zip: no checkpoint folder matches 'uncased' \(found Ælæctra_Cased\)",
    ):
        unpack(z, tmp_path / "other", subfolder=UNCASED.subfolder)
