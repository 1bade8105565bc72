"""The model card OUT/README.md: front matter the Hub reads, a body derived from the folder,
a usage snippet that runs, and a README.md of the user's that is never overwritten."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tfckpt import TINY_CONFIG, bert_variables

from danbert_convert.cli import cli
from danbert_convert.errors import OutputExistsError
from danbert_convert.output import card
from danbert_convert.releases.registry import LICENSES, RELEASES
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import PARITY_ATOL, PARITY_RTOL
from danbert_convert.stages.workflow import run_all

SAMPLE = "danish-bert-sample"
USER_README = "# My model\n\nNotes I wrote by hand. æøå\n"
# The Hub's licence ids (huggingface/hub-docs, docs/hub/repositories-licenses.md), those in use.
HUB_LICENSES = {"cc-by-4.0", "cc-by-sa-4.0", "apache-2.0", "mit", "unknown", "other"}
WORDFREQ_LANG = {"no": "nb"}  # wordfreq names Norwegian Bokmål


def front_matter(text: str) -> dict:
    """The YAML between the leading `---` lines, by a YAML parser."""
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, text[:200]
    return yaml.safe_load(m.group(1))


def snippet(text: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    return code


def run_snippet(out: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Execute the card's Python as a user would, from OUT's parent folder; its stdout."""
    monkeypatch.chdir(out.parent)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(snippet((out / "README.md").read_text("utf-8")), "README.md", "exec"), {})
    return stdout.getvalue()


def fill_mask_sentence(text: str) -> str:
    (sentence,) = re.findall(r"fill_mask\((\".*?\")\)", text)
    return json.loads(sentence)


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`danbert all danish-bert-sample`: fetched from package data (no network), converted,
    verified; the model folder."""
    root = tmp_path_factory.mktemp("card-sample")
    out = root / SAMPLE
    r = cli_run("all", SAMPLE, "--dest", str(root / "work"), "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


def test_sample_front_matter_field_by_field(sample: Path) -> None:
    text = (sample / "README.md").read_text("utf-8")
    meta = front_matter(text)
    assert meta == {
        "language": ["da"],
        "license": "cc-by-sa-4.0",
        "library_name": "transformers",
        "pipeline_tag": "fill-mask",
        "tags": ["bert", "danbert-convert", "sample"],
    }
    # The Hub's own reader agrees.
    from huggingface_hub import ModelCard

    hub = ModelCard.load(sample / "README.md").data
    assert (hub.license, hub.language, hub.pipeline_tag) == ("cc-by-sa-4.0", ["da"], "fill-mask")
    assert hub.library_name == "transformers"


def test_sample_body_names_licence_checksums_counts_and_verify(sample: Path) -> None:
    text = (sample / "README.md").read_text("utf-8")
    manifest = json.loads((sample / "danbert-manifest.json").read_text())
    assert card.has_marker(text)
    assert "## Licence\n\n[CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/)" in text
    assert "wordfreq" in text and "random weights" in text
    assert "danbert all danish-bert-uncased-v2" in text  # the real release, for a sample
    assert manifest["versions"]["danbert-convert"] in text
    # Every source checksum the manifest recorded, and the zip's.
    digests = [f["sha256"] for f in manifest["source"]["files"] if "sha256" in f]
    assert len(digests) == 4 and all(f"`{d}`" in text for d in digests)
    assert f"SHA-256 `{RELEASES[SAMPLE].sha256}`" in text
    # Counts against the checkpoint itself, read by TensorFlow.
    import tensorflow as tf

    ckpt = sample.parent / "work" / "danish_bert_sample" / "bert_model.ckpt"
    names = tf.train.load_checkpoint(str(ckpt)).get_variable_to_shape_map()
    slots = sum(n.endswith(("/adam_m", "/adam_v")) for n in names)
    weights = len(names) - slots - 1
    assert f"Left out: {slots + 1} variables (Adam optimizer slot: {slots}; training step " \
           "counter: 1)" in text  # fmt: skip
    assert f"Mapped: {weights} tensors" in text
    assert "- Tokenizer: lowercase; strip accents except å" in text
    # verify's result with its tolerances: `all` ran it.
    section = text.split("## Verification", 1)[1].split("\n## ", 1)[0]
    assert "passed every check" in section
    assert "| parity | pass |" in section
    assert f"{PARITY_ATOL:g} + {PARITY_RTOL:g} × max|reference|" in section
    assert "README.md" not in manifest["outputs"]  # documentation, not a hashed output


def test_sample_snippet_runs_and_fills_the_mask_in_danish(sample, monkeypatch) -> None:
    from transformers import AutoTokenizer
    from wordfreq import zipf_frequency

    text = (sample / "README.md").read_text("utf-8")
    sentence = fill_mask_sentence(text)
    mask = AutoTokenizer.from_pretrained(sample).mask_token
    assert sentence.count(mask) == 1
    # Danish by an independent word list: every word is common Danish.
    words = re.findall(r"\w+", sentence.replace(mask, " ").lower())
    assert words and all(zipf_frequency(w, "da") >= 3 for w in words), words
    printed = run_snippet(sample, monkeypatch).splitlines()
    assert len(printed) == 5  # fill-mask's top 5, one "token score" line each
    assert all(re.fullmatch(r"\S+ [0-9.e-]+", line) for line in printed), printed


def test_rerun_with_every_stage_skipped_keeps_the_verify_result(sample, tmp_path) -> None:
    """A rerun skips every stage; the card (rewritten from the saved result when it went
    missing) still shows verify's result, and is not touched when it is there."""
    before = (sample / "README.md").read_bytes()
    mtime = (sample / "README.md").stat().st_mtime_ns
    work = sample.parent / "work"
    result = run_all(SAMPLE, dest=work, out=sample)
    assert all(s.skipped for s in result.stages)
    assert (sample / "README.md").stat().st_mtime_ns == mtime
    (sample / "README.md").unlink()
    run_all(SAMPLE, dest=work, out=sample)
    assert (sample / "README.md").read_bytes() == before


def test_every_registry_entry_has_a_hub_licence() -> None:
    for r in RELEASES.values():
        assert r.license in HUB_LICENSES, r.name
    assert RELEASES["danish-bert-uncased-v2"].license == "cc-by-4.0"
    assert "certainlyio/nordic_bert" in RELEASES["danish-bert-uncased-v2"].homepage
    r = cli_run("models")
    assert r.exit_code == 0
    header, v2 = r.stdout.splitlines()[:2]
    assert "LICENSE" in header.split()
    assert v2.split()[:5] == ["*", "danish-bert-uncased-v2", "da", "no", "cc-by-4.0"]
    r = cli_run("models", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)["models"]}
    assert rows[SAMPLE]["license"] == "cc-by-sa-4.0"
    assert rows["swedish-bert-uncased"]["license"] == "cc-by-4.0"


@pytest.mark.parametrize("name", [n for n in RELEASES if n != SAMPLE])
def test_registry_release_card_in_its_language(full_release, tmp_path, name) -> None:
    """Front matter by a YAML parser (`no`, Norwegian, stays a string, not YAML 1.1's false);
    the fill-mask example in the release's language, by wordfreq's word lists."""
    from wordfreq import zipf_frequency

    out = tmp_path / "m"
    convert(full_release, out, card=False)
    text = card.render(out, release=name)
    release = RELEASES[name]
    meta = front_matter(text)
    assert meta["language"] == [release.language] and meta["license"] == release.license
    assert release.authors in text and release.urls[0] in text
    short, url = LICENSES[release.license]
    assert f"## Licence\n\n[{short}]({url})" in text
    assert (release.license_note or f"credit {release.authors}") in text
    sentence = fill_mask_sentence(text)
    if release.language not in card.LANGUAGES:  # multilingual: the examples the vocab knows
        assert sentence in {e.masked.format(mask="[MASK]") for e in card.EXAMPLES.values()}
        return
    lang = WORDFREQ_LANG.get(release.language, release.language)
    words = re.findall(r"\w+", sentence.replace("[MASK]", " ").lower())
    assert all(zipf_frequency(w, lang) >= 3 for w in words), (lang, words)


def test_plain_convert_card_has_unknown_licence_and_no_verify_section(
    full_release, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "model"
    r = cli_run("convert", str(full_release), str(out))
    assert r.exit_code == 0, r.output
    text = (out / "README.md").read_text("utf-8")
    meta = front_matter(text)
    assert meta["license"] == "unknown" and "language" not in meta
    assert meta["pipeline_tag"] == "fill-mask" and meta["library_name"] == "transformers"
    assert "## Licence\n\nUnknown — check the source." in text
    assert "## Verification" not in text
    n = len(bert_variables(TINY_CONFIG))
    assert f"Left out: {2 * n + 1} variables (Adam optimizer slot: {2 * n}; training step " \
           "counter: 1)" in text  # fmt: skip
    manifest = json.loads((out / "danbert-manifest.json").read_text())
    for f in manifest["source"]["files"]:
        if "sha256" in f:
            assert f"| `{f['path']}` | {f['bytes']} | `{f['sha256']}` |" in text
    assert "[MASK]" in fill_mask_sentence(text)
    assert len(run_snippet(out, monkeypatch).splitlines()) == 5


def test_verify_write_card_adds_the_verify_section(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    convert(full_release, out)
    assert "## Verification" not in (out / "README.md").read_text("utf-8")
    r = cli_run("verify", str(out), "--against", str(full_release), "--write-card")
    assert r.exit_code == 0, r.output
    text = (out / "README.md").read_text("utf-8")
    section = text.split("## Verification", 1)[1]
    assert "passed every check" in section and "| parity | pass |" in section
    assert f"{PARITY_ATOL:g} + {PARITY_RTOL:g} × max|reference|" in section
    assert front_matter(text)["license"] == "unknown"
    # Without --write-card, verify leaves the card alone.
    (out / "README.md").unlink()
    assert cli_run("verify", str(out), "--against", str(full_release)).exit_code == 0
    assert not (out / "README.md").exists()


def test_verify_write_card_failing_leaves_the_card(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    convert(full_release, out)
    before = (out / "README.md").read_bytes()
    r = cli_run("verify", str(out), "--write-card", "--expect", "zzz")
    assert r.exit_code == 6
    assert "README.md not written: verification failed" in r.stderr
    assert (out / "README.md").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "heads", "tag", "pipeline"),
    [
        ("bare", (), "feature-extraction", None),
        ("mlm", ("mlm",), "fill-mask", "fill-mask"),
        ("classifier", ("classifier",), "text-classification", "text-classification"),
        ("squad", ("squad",), "question-answering", None),
    ],
)
def test_pipeline_tag_follows_the_heads(release, tmp_path, monkeypatch, name, heads, tag, pipeline):
    """config.json's architectures decide the task; the snippet runs for each. A BertModel
    gets no fill-mask example."""
    out = tmp_path / "model"
    convert(release(name, heads=heads), out)
    text = (out / "README.md").read_text("utf-8")
    assert front_matter(text)["pipeline_tag"] == tag
    code = snippet(text)
    if pipeline is None:
        assert "pipeline" not in code and "[MASK]" not in code
    else:
        assert f'pipeline("{pipeline}", model=name)' in code
    printed = run_snippet(out, monkeypatch)
    if pipeline == "fill-mask":
        assert len(printed.splitlines()) == 5
    elif pipeline == "text-classification":
        assert "LABEL_" in printed
    elif tag == "question-answering":  # transformers 5 dropped its pipeline: the span itself
        assert "AutoModelForQuestionAnswering" in code and len(printed.splitlines()) == 1
    else:
        assert printed == ""


def test_unknown_language_examples_follow_the_vocab(release, tmp_path) -> None:
    """No registry entry: the example sentences are in the language the vocab covers best."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "paris", "is", "the", "capital",
             "of", "france", ".", "what", "?", "a", "b"]  # fmt: skip
    out = tmp_path / "model"
    convert(release("card-english", vocab=vocab), out)
    text = (out / "README.md").read_text("utf-8")
    assert fill_mask_sentence(text) == "Paris is the [MASK] of France."
    assert "The example sentences are English" in text


def test_no_card(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    r = cli_run("convert", str(full_release), str(out), "--no-card")
    assert r.exit_code == 0, r.output
    assert not (out / "README.md").exists()
    assert "README.md" not in json.loads((out / "danbert-manifest.json").read_text())["outputs"]
    out2 = tmp_path / "all"
    run_all(SAMPLE, dest=tmp_path / "work", out=out2, card=False)
    assert not (out2 / "README.md").exists()


def test_user_readme_survives_convert_force(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    convert(full_release, out)
    (out / "README.md").write_text(USER_README, encoding="utf-8")
    r = cli_run("convert", str(full_release), str(out), "--force")
    assert r.exit_code == 0, r.output
    assert (out / "README.md").read_text("utf-8") == USER_README
    lines = [x for x in r.stderr.splitlines() if "README.md" in x]
    assert lines == [f"{out / 'README.md'} is not a danbert model card: kept unchanged, "
                     "no card written"]  # fmt: skip
    # With --no-card too: the user's file is never lost.
    assert cli_run("convert", str(full_release), str(out), "-f", "--no-card").exit_code == 0
    assert (out / "README.md").read_text("utf-8") == USER_README


def test_our_card_edited_without_the_marker_is_the_users(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    convert(full_release, out)
    ours = (out / "README.md").read_text("utf-8")
    edited = "\n".join(x for x in ours.splitlines() if not x.startswith(card.MARKER)) + "\n"
    (out / "README.md").write_text(edited, encoding="utf-8")
    convert(full_release, out, force=True)
    assert (out / "README.md").read_text("utf-8") == edited
    # With the marker kept, an edited card is ours and is rewritten.
    (out / "README.md").write_text(ours.replace("# model", "# mine"), encoding="utf-8")
    convert(full_release, out, force=True)
    assert (out / "README.md").read_text("utf-8") == ours


def test_user_readme_survives_all(sample, tmp_path) -> None:
    """`all` over a folder with the user's README.md: kept on a rerun that skips everything,
    and on --force, which converts and verifies again."""
    work, out = sample.parent / "work", tmp_path / SAMPLE
    run_all(SAMPLE, dest=work, out=out)
    (out / "README.md").write_text(USER_README, encoding="utf-8")
    r = cli_run("all", SAMPLE, "--dest", str(work), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "verify   skipped" in r.stdout
    assert (out / "README.md").read_text("utf-8") == USER_README
    assert sum("README.md is not a danbert model card" in x for x in r.stderr.splitlines()) == 1
    r = cli_run("all", SAMPLE, "--dest", str(work), "--out", str(out), "--force")
    assert r.exit_code == 0, r.output
    assert (out / "README.md").read_text("utf-8") == USER_README
    assert sum("README.md is not a danbert model card" in x for x in r.stderr.splitlines()) == 1


def test_verify_write_card_refuses_the_users_readme(full_release, tmp_path) -> None:
    out = tmp_path / "model"
    convert(full_release, out, card=False)
    (out / "README.md").write_text(USER_README, encoding="utf-8")
    r = cli_run("verify", str(out), "--write-card")
    assert r.exit_code == OutputExistsError.exit_code == 4
    assert r.stderr == (
        f"error: {out / 'README.md'} is not a danbert model card (no '{card.MARKER}' line after "
        "its front matter); it is left as it is: move it away to write the card\n"
    )
    assert r.stdout == ""  # refused before any check ran
    assert (out / "README.md").read_text("utf-8") == USER_README
    with pytest.raises(OutputExistsError):
        card.write_card(out)


@pytest.mark.parametrize(
    ("text", "ours"),
    [
        (f"---\nlicense: mit\n---\n{card.MARKER} 0.1.0 -->\n# x\n", True),
        (f"---\nlicense: mit\n---\n\n{card.MARKER} 0.1.0 -->\n", True),
        (f"---\r\nlicense: mit\r\n---\r\n{card.MARKER} 0.1.0 -->\r\n", True),
        ("---\nlicense: mit\n---\n# Mine\n", False),
        (f"# Mine\n\nI once used danbert-convert, whose cards say\n{card.MARKER} -->\n", False),
        (f"---\nlicense: mit\n---\n# Mine\n{card.MARKER} -->\n", False),
        (f"{card.MARKER} -->\n", False),
    ],
)
def test_marker_is_recognised_only_after_the_front_matter(text: str, ours: bool) -> None:
    assert card.has_marker(text) is ours


def test_empty_or_missing_readme_is_not_the_users(tmp_path) -> None:
    assert not card.is_users(tmp_path / "README.md")
    (tmp_path / "README.md").write_text("\n")
    assert not card.is_users(tmp_path / "README.md")
    (tmp_path / "README.md").write_text("hello\n")
    assert card.is_users(tmp_path / "README.md")


def test_card_found_by_zip_digest_when_from_names_no_release(sample, tmp_path) -> None:
    """`--from sample.zip` without a release name: provenance names no release, but the
    zip's SHA-256 is the registry's, so the card still knows the licence. Any other zip
    (its digest unknown to the registry) gets "unknown"."""
    zip_path = sample.parent / "work" / "danish_bert_sample.zip"
    out = tmp_path / "m"
    run_all(from_path=zip_path, dest=tmp_path / "w", out=out)
    meta = front_matter((out / "README.md").read_text("utf-8"))
    assert meta["license"] == "cc-by-sa-4.0" and meta["language"] == ["da"]
    assert card.find_release({"provenance": {"release": None, "zip_sha256": "0" * 64}}) is None


def test_write_card_on_a_folder_that_is_no_conversion(tmp_path) -> None:
    from danbert_convert.errors import InputError

    with pytest.raises(InputError, match=r"config\.json: missing; not a converted model folder$"):
        card.write_card(tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(InputError, match=r"config\.json: expected a JSON object$"):
        card.write_card(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_card_claims_no_parity_it_did_not_check(full_release, tmp_path) -> None:
    """A copied folder whose source cannot be found: the card says parity was not run, and
    gives no command-line advice."""
    out = tmp_path / "elsewhere" / "model"
    convert(full_release, out)
    (out / "danbert-manifest.json").write_text(
        (out / "danbert-manifest.json").read_text().replace('"root": "', '"root": "gone/')
    )
    r = cli_run("verify", str(out), "--write-card")
    assert r.exit_code == 0, r.output
    section = (out / "README.md").read_text("utf-8").split("## Verification", 1)[1]
    assert "passed every check it ran (parity not run)" in section
    assert "| parity | skip |" in section and "--against" not in section


def test_a_failing_all_takes_back_the_cards_earlier_pass(sample, tmp_path) -> None:
    out = tmp_path / "model"
    shutil.copytree(sample, out)
    assert "## Verification" in (out / "README.md").read_text("utf-8")
    r = cli_run("all", SAMPLE, "--dest", str(tmp_path / "w"), "--out", str(out), "--expect", "zzzz")
    assert r.exit_code == 6, r.output
    assert "## Verification" not in (out / "README.md").read_text("utf-8")


@pytest.mark.parametrize(
    ("part", "tag", "base"),
    [("generator", "fill-mask", "ElectraModel"), ("discriminator", "feature-extraction", None)],
)
def test_electra_card_names_its_classes_and_its_snippet_runs(tmp_path, monkeypatch, part, tag,
                                                             base) -> None:  # fmt: skip
    """Issue 14: an ELECTRA part's card: its task, the electra tag, and a snippet that runs."""
    from tfckpt_electra import write_release

    out = tmp_path / "model"
    convert(write_release(tmp_path / "electra"), out, part=part)
    text = (out / "README.md").read_text("utf-8")
    meta = front_matter(text)
    assert meta["pipeline_tag"] == tag and meta["tags"][0] == "electra"
    assert "`AutoModel` gives the encoder (`ElectraModel`)" in text
    printed = run_snippet(out, monkeypatch)
    assert len(printed.splitlines()) == (5 if part == "generator" else 0)
