"""Known releases: where to download them, what they are, who made them and under which
licence.

All are TensorFlow 1 checkpoints in zips: BotXo's (now Certainly) Nordic BERTs behind Dropbox
links (repository certainlyio/nordic_bert), Google's BERT and ELECTRA on Google Cloud Storage,
and the Danish ELECTRA Ælæctra behind a Dropbox link. No publisher gave checksums, so `sha256`
and `size` stay unset until someone records them from a known-good download.

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
    family: str = "bert"
    """The architecture: "bert" or "electra"."""
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
    subfolder: str | None = None
    """For a zip holding several checkpoint folders (variants): a regular expression, searched
    case-insensitively in each folder's path inside the zip, that picks this release's."""
    strip_accents: bool | None = None
    """How the model's training text was normalised, when the release says so (convert's
    --strip-accents/--no-strip-accents); None: the vocab-relative default rule."""

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

# google-research/bert's README at eedf5716ce1268e56f0a50264a88cafad334ac61 (its HEAD, 2020-03-11)
# lists the zips below and says "These models are all released under the same license as the
# source code (Apache 2.0)"; its LICENSE is Apache 2.0.
GOOGLE_BERT = "https://github.com/google-research/bert"
GOOGLE_BERT_AUTHORS = "Google Research (Devlin, Chang, Lee and Toutanova)"
GOOGLE_BERT_ZIPS = "https://storage.googleapis.com/bert_models"

# google-research/electra's README at 8a46635f32083ada044d7e9ad09604742600ee7b (its HEAD,
# 2021-03-31) links the three zips; its LICENSE is Apache 2.0 and the README gives the weights
# no other licence. Each zip holds electra_<size>/ with a checkpoint and vocab.txt, no config.
GOOGLE_ELECTRA = "https://github.com/google-research/electra"
GOOGLE_ELECTRA_AUTHORS = "Google Research (Clark, Luong, Le and Manning)"
GOOGLE_ELECTRA_NOTE = (
    "The repository's LICENSE is Apache 2.0 and its README gives the released weights no other "
    "licence. When you share this model, credit the authors and link the original release."
)

# google-research/albert's README ("Pre-trained Models": a tar file and a TF-Hub module per size,
# v1 and v2) and its LICENSE (Apache 2.0). Each tarball unpacks to albert_<size>/ with
# model.ckpt-best.*, albert_config.json and 30k-clean.model (the layout the README's fine-tuning
# commands name; not seen here, no download from here). v1 and v2 share the folder name.
GOOGLE_ALBERT = "https://github.com/google-research/albert"
GOOGLE_ALBERT_AUTHORS = "Google Research (Lan, Chen, Goodman, Gimpel, Sharma and Soricut)"
GOOGLE_ALBERT_NOTE = (
    "The repository's LICENSE is Apache 2.0 and its README gives the released weights no other "
    "licence. When you share this model, credit the authors and link the original release."
)

# MalteHB/-l-ctra's README at 14ba1982113026bf3acc46e46b3c777ba408862d links one zip for both
# variants; its LICENSE (81e362cf184463b596a09137ada7f147301cf915) is MIT. What the zip holds
# was not seen (no download from here): its notebooks train into
# models/ælæctra_{cased,uncased}_32k/ with vocab.txt one level up.
AELAECTRA = "https://github.com/MalteHB/-l-ctra"
AELAECTRA_URL = "https://www.dropbox.com/s/cag7prs1nvdchqs/%C3%86l%C3%A6ctra.zip?dl=1"
AELAECTRA_AUTHORS = "Malte Højmark-Bertelsen"
AELAECTRA_NOTE = (
    'The repository\'s LICENSE is MIT ("Copyright (c) 2020 MalteHB"), which asks that its '
    "copyright and permission notice go with every copy: keep them with this model and link "
    "the original release."
)

LICENSES = {
    "cc-by-4.0": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc-by-sa-4.0": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "apache-2.0": ("Apache 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "mit": ("MIT", "https://opensource.org/licenses/MIT"),
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
        *(
            Release(
                name=name,
                urls=(f"{GOOGLE_BERT_ZIPS}/{folder}/{stem}.zip",),
                filename=f"{stem}.zip",
                language="multilingual" if stem.startswith("multi") else "en",
                cased="uncased" not in stem,
                license="apache-2.0",
                authors=GOOGLE_BERT_AUTHORS,
                homepage=GOOGLE_BERT,
                notes=notes,
            )
            for name, folder, stem, notes in (
                ("bert-base-uncased", "2018_10_18", "uncased_L-12_H-768_A-12", "BERT-Base."),
                ("bert-large-uncased", "2018_10_18", "uncased_L-24_H-1024_A-16", "BERT-Large."),
                ("bert-base-cased", "2018_10_18", "cased_L-12_H-768_A-12", "BERT-Base."),
                ("bert-large-cased", "2018_10_18", "cased_L-24_H-1024_A-16", "BERT-Large."),
                (
                    "bert-base-multilingual-cased",
                    "2018_11_23",
                    "multi_cased_L-12_H-768_A-12",
                    "BERT-Base, 104 languages (Google's recommended multilingual model).",
                ),
            )
        ),
        *(
            Release(
                name=f"electra-{size}",
                urls=(f"https://storage.googleapis.com/electra-data/electra_{size}.zip",),
                filename=f"electra_{size}.zip",
                language="en",
                cased=False,
                license="apache-2.0",
                authors=GOOGLE_ELECTRA_AUTHORS,
                homepage=GOOGLE_ELECTRA,
                family="electra",
                license_note=GOOGLE_ELECTRA_NOTE,
                notes=f"ELECTRA-{size.capitalize()}: discriminator and generator; no config "
                "file in the zip (sizes come from the tensor shapes).",
            )
            for size in ("small", "base", "large")
        ),
        *(
            Release(
                name=f"albert-{size}-{version}",
                urls=(
                    f"https://storage.googleapis.com/albert_models/albert_{size}_{version}.tar.gz",
                ),
                filename=f"albert_{size}_{version}.tar.gz",
                language="en",
                cased=False,
                license="apache-2.0",
                authors=GOOGLE_ALBERT_AUTHORS,
                homepage=GOOGLE_ALBERT,
                family="albert",
                license_note=GOOGLE_ALBERT_NOTE,
                notes=f"ALBERT-{size.capitalize()} {version}: SentencePiece vocab "
                f"(30k-clean.model); unpacks to albert_{size}/, as the other version does "
                "(use another --dest for both).",
            )
            for version in ("v2", "v1")
            for size in ("base", "large", "xlarge", "xxlarge")
        ),
        *(
            Release(
                name=f"aelaectra-danish-{casing}",
                urls=(AELAECTRA_URL,),
                filename="aelaectra.zip",
                language="da",
                cased=casing == "cased",
                license="mit",
                authors=AELAECTRA_AUTHORS,
                homepage=AELAECTRA,
                family="electra",
                license_note=AELAECTRA_NOTE,
                notes=f"Ælæctra, an ELECTRA-Small trained on Danish Gigaword; the {casing} "
                "variant of the zip that holds both.",
                subfolder=pattern,
                # Its tokenization.py comments out _run_strip_accents ("THIS REMOVES THE
                # DANISH CHARACTER 'Å' FROM THE CORPUS"): every accent kept, in both variants
                # (MalteHB/-l-ctra, electra_google/model/tokenization.py, 8768c0a).
                strip_accents=False,
            )
            # "cased" is inside "uncased": the cased variant's folder has no "un" before it.
            for casing, pattern in (("cased", "(?<!un)cased"), ("uncased", "uncased"))
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
