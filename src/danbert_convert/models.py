"""Known Nordic BERT releases: where to download them and what they are.

BotXo (now Certainly) published these as Google-BERT TF1 checkpoints in zips behind Dropbox
links (repository certainlyio/nordic_bert). No checksums were ever published, so `sha256` and
`size` stay unset until someone records them from a known-good download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from danbert_convert.errors import InputError


@dataclass(frozen=True)
class Release:
    """One downloadable release. `urls` are tried in order."""

    name: str
    urls: tuple[str, ...]
    filename: str
    language: str
    cased: bool
    sha256: str | None = None
    size: int | None = None
    notes: str = ""
    broken: bool = False

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["urls"] = list(self.urls)
        return d


DEFAULT_MODEL = "danish-bert-uncased-v2"

RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            name="danish-bert-uncased-v2",
            urls=("https://www.dropbox.com/s/19cjaoqvv2jicq9/danish_bert_uncased_v2.zip?dl=1",),
            filename="danish_bert_uncased_v2.zip",
            language="da",
            cased=False,
            notes="BERT-base; the zip is ~1.3 GB because it keeps the Adam slots.",
        ),
        Release(
            name="danish-bert-uncased-v1",
            urls=("https://www.dropbox.com/s/b2ycb6l3icla0m1/danish_bert_uncased.zip?dl=1",),
            filename="danish_bert_uncased.zip",
            language="da",
            cased=False,
            notes="Superseded by v2.",
        ),
        Release(
            name="swedish-bert-uncased",
            urls=("https://www.dropbox.com/s/w38jslro7tb1j4m/swedish_bert_uncased.zip?dl=1",),
            filename="swedish_bert_uncased.zip",
            language="sv",
            cased=False,
        ),
        Release(
            name="norwegian-bert-uncased",
            urls=("https://www.dropbox.com/s/avlcftcfm9k6gp0/norwegian_bert_uncased.zip?dl=1",),
            filename="norwegian_bert_uncased.zip",
            language="no",
            cased=False,
            notes=(
                "Reported broken upstream: vocab with ##/##_ prefixes, outputs only unknown "
                "tokens (nordic_bert issues 9 and 11)."
            ),
            broken=True,
        ),
    )
}


def get_release(name: str) -> Release:
    """The release called `name`; InputError listing the known names otherwise."""
    try:
        return RELEASES[name]
    except KeyError:
        known = ", ".join(RELEASES)
        raise InputError(f"unknown model {name!r} (known: {known})") from None
