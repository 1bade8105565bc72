"""Unpacking release zips: safety checks, junk, layouts, corrupt archives."""

from __future__ import annotations

import filecmp
import zipfile
from pathlib import Path

import pytest
from zips import make_zip, zip_folder

from danbert_convert.errors import InputError, OutputExistsError
from danbert_convert.releases.archive import locate_checkpoint_dir, unpack
from danbert_convert.source import find_checkpoint


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_release_zip_round_trip(full_release: Path, tmp_path: Path) -> None:
    z = zip_folder(full_release, tmp_path / "danish_bert_uncased_v2.zip", "danish_bert_uncased_v2")
    dest = tmp_path / "dest"
    r = unpack(z, dest)
    assert r.unpacked
    assert r.folder == r.checkpoint_dir == dest / "danish_bert_uncased_v2"
    names = sorted(p.name for p in full_release.iterdir())
    assert sorted(p.name for p in r.checkpoint_dir.iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(full_release, r.checkpoint_dir, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert find_checkpoint(r.checkpoint_dir) == r.checkpoint_dir / "bert_model.ckpt"
    assert r.nbytes == sum(p.stat().st_size for p in full_release.iterdir())
    # Only the target: no temporary siblings left behind.
    assert [p.name for p in dest.iterdir()] == ["danish_bert_uncased_v2"]


def test_macosx_junk_is_skipped(full_release: Path, tmp_path: Path) -> None:
    z = zip_folder(full_release, tmp_path / "r.zip", "rel", junk=True)
    assert any(n.startswith("__MACOSX/") for n in zipfile.ZipFile(z).namelist())
    r = unpack(z, tmp_path / "dest")
    assert _listing(tmp_path / "dest") == ["rel"] + [
        f"rel/{p.name}" for p in sorted(full_release.iterdir())
    ]
    assert r.checkpoint_dir == tmp_path / "dest" / "rel"


def test_nested_top_folder(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "r.zip",
        [("outer/README", b"hi"), ("outer/inner/bert_config.json", b"{}"), ("outer/inner/x", b"")],
    )
    r = unpack(z, tmp_path / "dest")
    assert r.folder == tmp_path / "dest" / "outer"
    assert r.checkpoint_dir == tmp_path / "dest" / "outer" / "inner"
    assert locate_checkpoint_dir(r.folder) == r.checkpoint_dir


def test_flat_zip_unpacks_under_its_stem(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "flat.zip", [("bert_config.json", b"{}"), ("vocab.txt", b"a\n")])
    r = unpack(z, tmp_path / "dest")
    assert r.checkpoint_dir == r.folder == tmp_path / "dest" / "flat"
    assert _listing(r.folder) == ["bert_config.json", "vocab.txt"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.txt", "'../evil.txt' points outside the folder"),
        ("rel/../../evil.txt", "'rel/../../evil.txt' points outside the folder"),
        ("rel\\..\\..\\evil.txt", "points outside the folder"),
        ("/etc/evil.txt", "'/etc/evil.txt' has an absolute path"),
        ("C:/evil.txt", "'C:/evil.txt' has an absolute path"),
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, name: str, message: str) -> None:
    z = make_zip(tmp_path / "bad.zip", [("rel/bert_config.json", b"{}"), (name, b"pwned")])
    with pytest.raises(InputError, match="bad.zip: entry .*" + message.replace(".", r"\.")):
        unpack(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("rel/link")
    link.external_attr = 0o120777 << 16
    z = make_zip(tmp_path / "bad.zip", [("rel/bert_config.json", b"{}"), (link, b"/etc/passwd")])
    with pytest.raises(InputError, match=r"bad\.zip: entry 'rel/link' is a symbolic link"):
        unpack(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    zeros = ("rel/zeros.bin", bytes(16 << 20))  # deflates about 1000:1
    z = make_zip(tmp_path / "bomb.zip", [("rel/bert_config.json", b"{}"), zeros])
    with pytest.raises(
        InputError, match=r"bomb\.zip: entry 'rel/zeros\.bin' expands \d+x \(limit 200x\)"
    ):
        unpack(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_total_size_cap(full_release: Path, tmp_path: Path) -> None:
    z = zip_folder(full_release, tmp_path / "r.zip", "rel")
    with pytest.raises(InputError, match=r"r\.zip: unpacks to \d+ bytes, over the limit of 1000"):
        unpack(z, tmp_path / "dest", max_total=1000)
    assert not (tmp_path / "dest").exists()


def test_truncated_zip(full_release: Path, tmp_path: Path) -> None:
    z = zip_folder(full_release, tmp_path / "r.zip", "rel")
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"r\.zip: not a zip file or truncated"):
        unpack(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_corrupt_entry_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 64
    z = make_zip(
        tmp_path / "r.zip",
        [("rel/bert_config.json", b"{}"), ("rel/vocab.txt", payload)],
        compression=zipfile.ZIP_STORED,
    )
    data = bytearray(z.read_bytes())
    at = data.index(payload[:512]) + 1000
    data[at] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"r\.zip: entry 'rel/vocab\.txt' is corrupt .*CRC"):
        unpack(z, tmp_path / "dest")
    # bert_config.json was already written into the temporary folder: all of it is gone.
    assert _listing(tmp_path / "dest") == []


def test_not_a_zip(tmp_path: Path) -> None:
    f = tmp_path / "page.zip"
    f.write_bytes(b"<!DOCTYPE html><html>Dropbox</html>")
    with pytest.raises(InputError, match=r"page\.zip: not a zip file"):
        unpack(f, tmp_path / "dest")


def test_missing_zip(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.zip: no such file"):
        unpack(tmp_path / "nope.zip", tmp_path / "dest")


def test_zip_without_config(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("rel/vocab.txt", b"a\n")])
    with pytest.raises(InputError, match=r"r\.zip: no bert_config\.json inside"):
        unpack(z, tmp_path / "dest")


def test_zip_with_only_junk(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("__MACOSX/._x", b"junk")])
    with pytest.raises(InputError, match=r"r\.zip: the zip holds no files"):
        unpack(z, tmp_path / "dest")


def test_two_checkpoint_folders_are_ambiguous(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("a/bert_config.json", b"{}"), ("b/bert_config.json", b"{}")])
    with pytest.raises(InputError, match=r"r\.zip: several checkpoint folders \(a, b\)"):
        unpack(z, tmp_path / "dest")


def test_duplicate_entry(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        z = make_zip(
            tmp_path / "r.zip", [("r/bert_config.json", b"{}"), ("r/bert_config.json", b"")]
        )
    with pytest.raises(InputError, match=r"r\.zip: entry 'r/bert_config\.json' appears twice"):
        unpack(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_file_and_folder_clash(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("r/bert_config.json", b"{}"), ("r/x", b""), ("r/x/y", b"")])
    with pytest.raises(InputError, match=r"r\.zip: entry 'r/x/y' clashes with a file"):
        unpack(z, tmp_path / "dest")
    assert _listing(tmp_path / "dest") == []


def test_existing_unpack_is_reused_and_force_redoes_it(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("rel/bert_config.json", b"{}")])
    first = unpack(z, tmp_path / "dest")
    (first.folder / "marker").write_text("kept")
    again = unpack(z, tmp_path / "dest")
    assert not again.unpacked and again.checkpoint_dir == first.checkpoint_dir
    assert (first.folder / "marker").exists()
    forced = unpack(z, tmp_path / "dest", force=True)
    assert forced.unpacked and not (first.folder / "marker").exists()


def test_foreign_folder_in_the_way(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "r.zip", [("rel/bert_config.json", b"{}")])
    (tmp_path / "dest" / "rel").mkdir(parents=True)
    (tmp_path / "dest" / "rel" / "mine.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match=r"rel exists and is not empty \(use --force"):
        unpack(z, tmp_path / "dest")
    assert (tmp_path / "dest" / "rel" / "mine.txt").read_text() == "precious"


def test_locate_in_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere: not a folder"):
        locate_checkpoint_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no bert_config\.json inside"):
        locate_checkpoint_dir(tmp_path / "empty")
