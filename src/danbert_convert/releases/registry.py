"""Known Nordic BERT releases: where to download them, what they are, who made them and
under which licence.

BotXo (now Certainly) published these as Google-BERT TF1 checkpoints in zips behind Dropbox
links (repository certainlyio/nordic_bert). No checksums were ever published, so `sha256` and
`size` stay unset until someone records them from a known-good download.

`danish-bert-sample` is a tiny zip shipped inside this package in the Danish release's layout
(scripts/make_sample_release.py makes it), fetched from package data instead of a URL, so the
whole pipeline can be tried offline in seconds.
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
    license: str
    """The Hugging Face Hub's licence id (https://huggingface.co/docs/hub/repositories-licenses),
    written to the model card; "unknown" when nobody stated one."""
    authors: str
    """Who made it, as the model card credits them."""
    homepage: str
    """Where the release and its licence are described ("" when nowhere but here)."""
    license_note: str = ""
    """Why the licence is what it is, when the release does not simply state it."""
    sha256: str | None = None
    size: int | None = None
    notes: str = ""
    broken: bool = False
    package_data: str | None = None
    """A zip shipped inside this package (a path under danbert_convert/), copied instead of
    downloaded; checked against `sha256` and unpacked as a download is."""
    sample_of: str | None = None
    """The real release this one is a small stand-in for."""

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["urls"] = list(self.urls)
        return d


DEFAULT_MODEL = "danish-bert-uncased-v2"

# certainlyio/nordic_bert's README ("This work is licensed under a Creative Commons Attribution
# 4.0 International License") and its LICENCE file, both added on 2020-03-20 (commits fa5c407,
# 7aad670), cover the repository's work: the models it links.
NORDIC_BERT = "https://github.com/certainlyio/nordic_bert"
NORDIC_BERT_AUTHORS = "BotXo (now Certainly)"

LICENSES = {
    "cc-by-4.0": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc-by-sa-4.0": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
}
"""Short name and text of the licence ids the registry uses."""

RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            name="danish-bert-uncased-v2",
            urls=("https://www.dropbox.com/s/19cjaoqvv2jicq9/danish_bert_uncased_v2.zip?dl=1",),
            filename="danish_bert_uncased_v2.zip",
            language="da",
            cased=False,
            license="cc-by-4.0",
            authors=NORDIC_BERT_AUTHORS,
            homepage=NORDIC_BERT,
            notes="BERT-base; the zip is ~1.3 GB because it keeps the Adam slots.",
        ),
        Release(
            name="danish-bert-uncased-v1",
            urls=("https://www.dropbox.com/s/b2ycb6l3icla0m1/danish_bert_uncased.zip?dl=1",),
            filename="danish_bert_uncased.zip",
            language="da",
            cased=False,
            license="cc-by-4.0",
            authors=NORDIC_BERT_AUTHORS,
            homepage=NORDIC_BERT,
            notes="Superseded by v2.",
        ),
        Release(
            name="swedish-bert-uncased",
            urls=("https://www.dropbox.com/s/w38jslro7tb1j4m/swedish_bert_uncased.zip?dl=1",),
            filename="swedish_bert_uncased.zip",
            language="sv",
            cased=False,
            license="cc-by-4.0",
            authors=NORDIC_BERT_AUTHORS,
            homepage=NORDIC_BERT,
        ),
        Release(
            name="norwegian-bert-uncased",
            urls=("https://www.dropbox.com/s/avlcftcfm9k6gp0/norwegian_bert_uncased.zip?dl=1",),
            filename="norwegian_bert_uncased.zip",
            language="no",
            cased=False,
            license="cc-by-4.0",
            authors=NORDIC_BERT_AUTHORS,
            homepage=NORDIC_BERT,
            notes=(
                "Reported broken upstream: vocab with ##/##_ prefixes, outputs only unknown "
                "tokens (nordic_bert issues 9 and 11)."
            ),
            broken=True,
        ),
        Release(
            name="danish-bert-sample",
            urls=(),
            filename="danish_bert_sample.zip",
            language="da",
            cased=False,
            license="cc-by-sa-4.0",
            authors="danbert-convert (random weights); the vocab's words from wordfreq "
            "by Robyn Speer",
            homepage="",
            license_note=(
                "The weights are random numbers, nobody's work; vocab.txt is derived from "
                "wordfreq's Danish word list (https://github.com/rspeer/wordfreq), whose data "
                "is CC BY-SA 4.0, so the folder is shared alike under that licence."
            ),
            sha256="e795ccafc58070ec3929d84a5ba2565bab6b3e2d255f761700dfd84023fb8bb8",
            size=1940386,
            notes=(
                "Bundled, offline: a 2-layer BERT with random weights in the Danish release's "
                "layout, to try the tool (vocab derived from wordfreq, CC BY-SA 4.0)."
            ),
            package_data="data/danish_bert_sample.zip",
            sample_of="danish-bert-uncased-v2",
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
