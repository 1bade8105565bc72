"""Unpacking tar releases (.tar.gz, .tgz, .tar) as ALBERT's come: layouts, hostile members,
damaged and bomb archives; every refusal one line, nothing left behind."""

from __future__ import annotations

import filecmp
import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from zips import albert_like_folder, make_tar, make_zip, member, tar_folder, zip_folder

from danbert_convert.errors import InputError, OutputExistsError
from danbert_convert.releases.archive import (
    TAR_HEADER_MAX,
    TAR_SLACK,
    ArchiveCorruptError,
    ZipCorruptError,
    locate,
    unpack,
)
from danbert_convert.source import find_checkpoint


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _nothing_left(tmp_path: Path) -> None:
    """No destination folder (nor a temporary sibling), nothing written outside it."""
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "evil.txt").exists()


@pytest.fixture(scope="session")
def albert_like(full_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return albert_like_folder(full_release, tmp_path_factory.mktemp("albert") / "albert_base")


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_release_tar_round_trip(full_release: Path, tmp_path: Path, suffix: str) -> None:
    mode = "w" if suffix == ".tar" else "w:gz"
    t = tar_folder(full_release, tmp_path / f"rel{suffix}", "rel", mode=mode)
    dest = tmp_path / "dest"
    r = unpack(t, dest)
    assert r.unpacked and r.folder == r.checkpoint_dir == dest / "rel"
    names = sorted(p.name for p in full_release.iterdir())
    assert sorted(p.name for p in r.checkpoint_dir.iterdir()) == names
    _, mismatch, errors = filecmp.cmpfiles(full_release, r.checkpoint_dir, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert find_checkpoint(r.checkpoint_dir) == r.checkpoint_dir / "bert_model.ckpt"
    assert r.vocab == r.checkpoint_dir / "vocab.txt" and r.spm_model is None
    assert r.nbytes == sum(p.stat().st_size for p in full_release.iterdir())
    assert [p.name for p in dest.iterdir()] == ["rel"]
    # Reused, not unpacked again; --force unpacks again.
    assert not unpack(t, dest).unpacked
    assert unpack(t, dest, force=True).unpacked


def test_albert_layout_gives_the_top_checkpoint_and_the_sentencepiece_model(
    albert_like: Path, tmp_path: Path
) -> None:
    t = tar_folder(albert_like, tmp_path / "albert_base_v2.tar.gz", "albert_base")
    r = unpack(t, tmp_path / "dest")
    top = tmp_path / "dest" / "albert_base"
    # The top folder's model.ckpt-best, not the TF-Hub copy in variables/ nor assets/.
    assert r.folder == r.checkpoint_dir == top
    assert find_checkpoint(top) == top / "model.ckpt-best"
    assert (r.vocab, r.spm_model) == (None, top / "30k-clean.model")
    assert locate(top) == r.__class__(top, top, False, 0, None, top / "30k-clean.model")
    assert _listing(top) == _listing(albert_like)


def test_tf_hub_copy_alone_is_found_below(albert_like: Path, tmp_path: Path) -> None:
    """Without a checkpoint at the top, the deeper one is taken (its config is in assets/,
    at the same depth, but a checkpoint beats a config alone)."""
    src = tmp_path / "hub"
    shutil.copytree(albert_like, src)
    for f in src.glob("model.ckpt-best.*"):
        f.unlink()
    (src / "albert_config.json").unlink()
    r = unpack(tar_folder(src, tmp_path / "hub.tar.gz", "hub"), tmp_path / "dest")
    assert r.checkpoint_dir == tmp_path / "dest" / "hub" / "variables"


def test_flat_tar_unpacks_under_its_stem(tmp_path: Path) -> None:
    t = make_tar(
        tmp_path / "flat.tar.gz",
        [member("albert_config.json", b"{}"), member("30k-clean.model", b"spm")],
    )
    r = unpack(t, tmp_path / "dest")
    assert r.checkpoint_dir == r.folder == tmp_path / "dest" / "flat"
    assert r.spm_model == r.folder / "30k-clean.model"


def test_format_goes_by_the_bytes_not_the_name(full_release: Path, tmp_path: Path) -> None:
    t = tar_folder(full_release, tmp_path / "looks.zip", "rel")
    assert unpack(t, tmp_path / "a").checkpoint_dir == tmp_path / "a" / "rel"
    z = zip_folder(full_release, tmp_path / "looks.tar.gz", "rel")
    assert unpack(z, tmp_path / "b").checkpoint_dir == tmp_path / "b" / "rel"


def test_macos_junk_is_skipped(tmp_path: Path) -> None:
    t = make_tar(
        tmp_path / "r.tar.gz",
        [
            member("rel/bert_config.json", b"{}"),
            member("rel/._bert_config.json", b"\x00\x05\x16\x07"),
            member("__MACOSX/rel/._x", b"junk"),
        ],
    )
    r = unpack(t, tmp_path / "dest")
    assert _listing(tmp_path / "dest") == ["rel", "rel/bert_config.json"]
    assert r.checkpoint_dir == tmp_path / "dest" / "rel"


HOSTILE = [
    (member("/etc/evil.txt", b"pwned"), "'/etc/evil.txt' has an absolute path"),
    (member("../evil.txt", b"pwned"), "'../evil.txt' points outside the folder"),
    (member("rel/../../evil.txt", b"pwned"), "'rel/../../evil.txt' points outside the folder"),
    (member("rel/link", type=tarfile.SYMTYPE, linkname="/etc"), "'rel/link' is a symbolic link"),
    (
        member("rel/hard", type=tarfile.LNKTYPE, linkname="rel/bert_config.json"),
        "'rel/hard' is a hard link",
    ),
    (member("rel/tty", type=tarfile.CHRTYPE, devmajor=4, devminor=1), "'rel/tty' is a device"),
    (member("rel/sda", type=tarfile.BLKTYPE, devmajor=8), "'rel/sda' is a device"),
    (member("rel/fifo", type=tarfile.FIFOTYPE), "'rel/fifo' is a FIFO"),
    (member("rel/vol", type=b"V"), "'rel/vol' is not a regular file or folder (type b'V')"),
]


@pytest.mark.parametrize("python_filter", [True, False], ids=["with-filter", "own-checks-only"])
@pytest.mark.parametrize(("bad", "message"), HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_members_are_refused_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bad: tuple[tarfile.TarInfo, bytes],
    message: str,
    python_filter: bool,
) -> None:
    if not python_filter:  # as on a Python without tarfile's extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    t = make_tar(tmp_path / "bad.tar.gz", [member("rel/bert_config.json", b"{}"), bad])
    with pytest.raises(InputError) as e:
        unpack(t, tmp_path / "dest")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{t}: entry ")
    assert message in text
    assert not isinstance(e.value, ArchiveCorruptError)  # refused, not damaged
    _nothing_left(tmp_path)


def test_the_first_hostile_member_is_refused_before_any_is_written(tmp_path: Path) -> None:
    """The hostile member last: the good ones before it were not written either."""
    t = make_tar(
        tmp_path / "r.tar",
        [member("rel/bert_config.json", b"{}"), member("rel/x", type=tarfile.FIFOTYPE)],
        mode="w",
    )
    with pytest.raises(InputError, match=r"r\.tar: entry 'rel/x' is a FIFO; refusing it"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_huge_declared_size_is_refused_from_the_header(tmp_path: Path) -> None:
    """A header declaring 100 GB, its data absent: refused on the header alone."""
    huge = tarfile.TarInfo("rel/model.ckpt.data-00000-of-00001")
    huge.size = 100 << 30
    raw = tarfile.TarInfo("rel/bert_config.json")
    raw.size = 2
    body = raw.tobuf(tarfile.PAX_FORMAT) + b"{}".ljust(512, b"\0") + huge.tobuf(tarfile.PAX_FORMAT)
    t = tmp_path / "big.tar.gz"
    t.write_bytes(gzip.compress(body))
    with pytest.raises(InputError) as e:
        unpack(t, tmp_path / "dest")
    assert str(e.value) == (
        f"{t}: unpacks to more than {8 << 30} bytes (entry "
        f"'rel/model.ckpt.data-00000-of-00001' declares {100 << 30}); refusing a possible tar bomb"
    )
    _nothing_left(tmp_path)


def test_total_size_cap(full_release: Path, tmp_path: Path) -> None:
    t = tar_folder(full_release, tmp_path / "r.tar.gz", "rel")
    with pytest.raises(InputError, match=r"r\.tar\.gz: unpacks to more than 1000 bytes"):
        unpack(t, tmp_path / "dest", max_total=1000)
    _nothing_left(tmp_path)


def test_member_count_cap(tmp_path: Path) -> None:
    t = make_tar(
        tmp_path / "many.tgz",
        [member("rel/bert_config.json", b"{}")] + [member(f"rel/f{i}") for i in range(20)],
    )
    with pytest.raises(InputError, match=r"many\.tgz: holds more than 10 entries; refusing it"):
        unpack(t, tmp_path / "dest", max_members=10)
    _nothing_left(tmp_path)
    assert unpack(t, tmp_path / "dest", max_members=21).unpacked


def test_gzip_bomb_is_stopped_by_counting_what_decompresses(tmp_path: Path) -> None:
    """Headers declaring a few bytes, then zeros that gzip shrinks 1000-fold: nothing in the
    headers gives it away; the count of decompressed bytes stops it at the cap."""
    tar = io.BytesIO()
    make_tar_bytes(tar, [member("rel/bert_config.json", b"{}")])
    zeros = TAR_SLACK + (2 << 20)
    t = tmp_path / "bomb.tar.gz"
    with gzip.open(t, "wb", compresslevel=9) as gz:
        gz.write(tar.getvalue())
        for _ in range(zeros >> 20):
            gz.write(bytes(1 << 20))
    assert t.stat().st_size < 200_000
    with pytest.raises(InputError) as e:
        unpack(t, tmp_path / "dest", max_total=1 << 20)
    assert str(e.value) == (
        f"{t}: decompresses to more than {(1 << 20) + TAR_SLACK} bytes, over the limit; "
        "refusing a possible gzip bomb"
    )
    _nothing_left(tmp_path)


def test_huge_pax_header_is_not_read_into_memory(tmp_path: Path) -> None:
    """tarfile reads a pax header whole: one of 2 MB (1000-fold compressed) is refused."""
    big = tarfile.TarInfo("rel/bert_config.json")
    big.size = 2
    big.pax_headers = {"comment": "x" * (2 * TAR_HEADER_MAX)}
    t = tmp_path / "pax.tar.gz"
    with tarfile.open(t, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(big, io.BytesIO(b"{}"))
    with pytest.raises(InputError) as e:
        unpack(t, tmp_path / "dest")
    assert str(e.value) == (
        f"{t}: an entry's headers at its start exceed {TAR_HEADER_MAX} bytes; refusing it"
    )
    _nothing_left(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_gzip_is_corrupt(full_release: Path, tmp_path: Path, keep: float) -> None:
    t = tar_folder(full_release, tmp_path / "r.tar.gz", "rel")
    data = t.read_bytes()
    t.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArchiveCorruptError) as e:
        unpack(t, tmp_path / "dest")
    assert str(e.value).startswith(f"{t}: ") and "\n" not in str(e.value)
    assert ZipCorruptError is ArchiveCorruptError  # fetch's old name still catches it
    _nothing_left(tmp_path)


def test_gzip_missing_only_its_trailer_is_corrupt(full_release: Path, tmp_path: Path) -> None:
    """Every tar block is there; only the gzip CRC and length (8 bytes) are cut off."""
    t = tar_folder(full_release, tmp_path / "r.tar.gz", "rel")
    t.write_bytes(t.read_bytes()[:-8])
    with pytest.raises(ArchiveCorruptError, match=r"r\.tar\.gz: the gzip stream is corrupt"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_gzip_crc_mismatch_is_corrupt(full_release: Path, tmp_path: Path) -> None:
    t = tar_folder(full_release, tmp_path / "r.tar.gz", "rel")
    data = bytearray(t.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    t.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorruptError, match=r"CRC check failed"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_plain_tar_cut_at_a_header_is_corrupt(full_release: Path, tmp_path: Path) -> None:
    """tarfile reads a tar cut just before a header as a shorter, complete one: the missing
    end-of-archive marker gives it away."""
    t = tar_folder(full_release, tmp_path / "r.tar", "rel", mode="w")
    with tarfile.open(t) as tf:
        last = tf.getmembers()[-1]
    t.write_bytes(t.read_bytes()[: last.offset])
    with pytest.raises(ArchiveCorruptError, match=r"r\.tar: damaged or truncated at byte \d+"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_plain_tar_cut_in_a_member_is_corrupt(full_release: Path, tmp_path: Path) -> None:
    t = tar_folder(full_release, tmp_path / "r.tar", "rel", mode="w")
    with tarfile.open(t) as tf:
        big = max(tf.getmembers(), key=lambda m: m.size)
    t.write_bytes(t.read_bytes()[: big.offset_data + big.size // 2])
    with pytest.raises(ArchiveCorruptError, match=r"r\.tar: damaged or truncated after entry"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_garbage_after_the_end_is_corrupt(tmp_path: Path) -> None:
    tar = io.BytesIO()
    make_tar_bytes(tar, [member("rel/bert_config.json", b"{}")])
    t = tmp_path / "r.tar.gz"
    t.write_bytes(gzip.compress(tar.getvalue() + b"trailing garbage"))
    with pytest.raises(ArchiveCorruptError, match="no end-of-archive marker"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_not_a_tar(tmp_path: Path) -> None:
    t = tmp_path / "page.tar.gz"
    t.write_bytes(gzip.compress(b"<!DOCTYPE html><html>Not Found</html>"))
    with pytest.raises(ArchiveCorruptError, match=r"page\.tar\.gz: not a tar archive, or damaged"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_gzip_inside_gzip_is_not_unwrapped(full_release: Path, tmp_path: Path) -> None:
    """Only one layer is decompressed (and counted): a tar.gz inside a gzip is no tar."""
    t = tar_folder(full_release, tmp_path / "r.tar.gz", "rel")
    t.write_bytes(gzip.compress(t.read_bytes()))
    with pytest.raises(ArchiveCorruptError, match="not a tar archive"):
        unpack(t, tmp_path / "dest")


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    t = make_tar(
        tmp_path / "dup.tar.gz",
        [member("rel/bert_config.json", b"{}"), member("rel/bert_config.json", b"[]")],
    )
    with pytest.raises(InputError, match=r"entry 'rel/bert_config\.json' appears twice"):
        unpack(t, tmp_path / "dest")
    _nothing_left(tmp_path)


def test_zip_member_count_cap(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "many.zip", [(f"rel/f{i}", b"") for i in range(5)])
    with pytest.raises(InputError, match=r"many\.zip: holds more than 4 entries"):
        unpack(z, tmp_path / "dest", max_members=4)


def make_tar_bytes(buf: io.BytesIO, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data))


def test_another_release_with_the_same_top_folder_is_not_reused(
    albert_like: Path, tmp_path: Path
) -> None:
    """ALBERT's v1 and v2 tarballs both hold albert_base/: unpacking v2 where v1 was must not
    hand back v1's checkpoint. Same names and sizes; the archive's file times tell them apart."""
    v1 = tar_folder(albert_like, tmp_path / "albert_base_v1.tar.gz", "albert_base")
    with tarfile.open(v1) as tf:
        members = [(m, (tf.extractfile(m) or io.BytesIO()).read()) for m in tf.getmembers()]
    for m, _ in members:
        m.mtime += 86_400
        m.pax_headers.pop("mtime", None)  # would override the header's on writing
    v2 = make_tar(tmp_path / "albert_base_v2.tar.gz", members)
    dest = tmp_path / "dest"
    assert unpack(v1, dest).unpacked
    assert not unpack(v1, dest).unpacked  # the same archive again: reused
    with pytest.raises(OutputExistsError) as e:
        unpack(v2, dest)
    assert str(e.value).startswith(f"{dest / 'albert_base'} holds another release or a changed")
    assert str(e.value).endswith("; use --force to replace it, or another --dest")
    r = unpack(v2, dest, force=True)
    assert r.unpacked and not unpack(v2, dest).unpacked
    top = dest / "albert_base"
    st = (top / "model.ckpt-best.index").stat()
    assert int(st.st_mtime) == int(next(m.mtime for m, _ in members if m.name.endswith(".index")))
