"""embg.textdata: sizes, languages, well-formed rows, disjoint calibration data, the validator's named sets."""

from __future__ import annotations

import ast
import platform
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from embg import textdata
from embg.textdata import builtin as validator_base
from embg.textdata.sets import DOCUMENT, QUERY, builtin_texts, load_texts_file

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "embg" / "textdata"
OVERLAP = 60
HANDWRITTEN_LANGS = ("ru", "de", "fr", "es", "zh", "ja", "ar", "hi")
# Scripts the calibration set must cover, by a character range of each.
SCRIPTS = {"Cyrillic": "\u0400-\u04ff", "Arabic": "\u0600-\u06ff", "CJK": "\u4e00-\u9fff",
           "Devanagari": "\u0900-\u097f", "Greek": "\u0370-\u03ff", "Hebrew": "\u0590-\u05ff",
           "Thai": "\u0e00-\u0e7f", "Hangul": "\uac00-\ud7af"}
LANG_SCRIPT = {"ru": "Cyrillic", "uk": "Cyrillic", "ar": "Arabic", "fa": "Arabic", "zh": "CJK", "ja": "CJK",
               "hi": "Devanagari", "mr": "Devanagari", "el": "Greek", "he": "Hebrew", "th": "Thai", "ko": "Hangul"}


def has_script(text: str, script: str) -> bool:
    return re.search(f"[{SCRIPTS[script]}]", text) is not None


def shingles(text: str) -> set[str]:
    text = " ".join(text.split())
    return {text[i:i + OVERLAP] for i in range(max(1, len(text) - OVERLAP + 1))}


@pytest.fixture(scope="module")
def pairs() -> list[textdata.RetrievalPair]:
    return textdata.retrieval_pairs()


@pytest.fixture(scope="module")
def calibration() -> list[textdata.CalibrationText]:
    return textdata.calibration_texts()


def validator_texts() -> list[str]:
    data = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "embg" / "validate" / "data").glob("*"))]
    return [t.text for t in builtin_texts()] + validator_base.parity_texts() + data


def test_retrieval_sizes_and_languages(pairs):
    langs = Counter(p.lang for p in pairs)
    assert len(pairs) >= 400
    stdlib = [p for p in pairs if p.id.startswith("stdlib:")]
    assert len(stdlib) >= 320 and {p.lang for p in stdlib} == {"en"}
    handwritten = [p for p in pairs if p.source == "handwritten"]
    assert len(handwritten) >= 80
    assert all(langs[lang] >= 10 for lang in HANDWRITTEN_LANGS), langs
    mixed = [p for p in handwritten if "-" in p.lang]
    assert len(mixed) >= 5 and all(a != b for a, b in (p.lang.split("-") for p in mixed))


def test_stdlib_pairs_follow_the_selection_rules(pairs):
    stdlib = [p for p in pairs if p.id.startswith("stdlib:")]
    modules = Counter(p.id.split(":", 1)[1].rsplit(".", 2)[0] for p in stdlib)
    assert len(modules) >= 40  # spread over many modules: topical neighbours, not one module's API
    for pair in stdlib:
        name = pair.id.split(":", 1)[1]
        assert pair.document.startswith(f"{name}: "), pair.id
        assert 15 <= len(pair.document[len(name) + 2:].split()) <= 250, pair.id
        assert pair.source.startswith("python-stdlib-docstring")
        assert pair.query not in pair.document  # the summary line is not repeated in the document


def test_every_retrieval_row_is_well_formed(pairs):
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({" ".join(p.query.lower().split()) for p in pairs}) == len(pairs)
    assert len({" ".join(p.document.lower().split()) for p in pairs}) == len(pairs)
    for pair in pairs:
        assert pair.query.strip() and pair.document.strip() and pair.lang and pair.source, pair.id
    for pair in (p for p in pairs if p.source == "handwritten"):
        query_lang, _, document_lang = pair.lang.partition("-")
        for text, lang in ((pair.query, query_lang), (pair.document, document_lang or query_lang)):
            if lang in LANG_SCRIPT:  # the language label matches the script of the text
                assert has_script(text, LANG_SCRIPT[lang]), (pair.id, lang)


def test_calibration_sizes_languages_and_lengths(calibration):
    assert len(calibration) >= 160
    assert {t.task for t in calibration} == {QUERY, DOCUMENT}
    multilingual = [t for t in calibration if t.lang not in ("en", "code")]
    assert len(multilingual) >= 40 and len({t.lang for t in multilingual}) >= 10
    for script in SCRIPTS:
        assert any(has_script(t.text, script) for t in multilingual), script
    for text in multilingual:
        if text.lang in LANG_SCRIPT:
            assert has_script(text.text, LANG_SCRIPT[text.lang]), text.text[:40]
    assert sum(t.lang == "code" for t in calibration) >= 20
    assert sum(t.lang == "en" and t.task == DOCUMENT for t in calibration) >= 40
    lengths = sorted(len(t.text) for t in calibration)
    assert lengths[0] <= 40 and lengths[-1] >= 1500  # a few words up to texts past the 257-token window
    assert all(t.text.strip() for t in calibration)


def test_calibration_is_disjoint_from_every_evaluation_text(pairs, calibration):
    evaluation = [t for p in pairs for t in (p.query, p.document)] + validator_texts()
    exact = {" ".join(t.split()) for t in evaluation}
    assert not [t.text for t in calibration if " ".join(t.text.split()) in exact]
    seen = set().union(*(shingles(t) for t in evaluation if t.strip()))
    shared = [t.text[:60] for t in calibration if shingles(t.text) & seen]
    assert not shared, f"calibration texts sharing a {OVERLAP}-character run with evaluation texts: {shared}"
    assert len({t.text for t in calibration}) == len(calibration)


def test_loader_returns_fresh_lists_of_frozen_rows(pairs):
    again = textdata.retrieval_pairs()
    assert again == pairs and again is not pairs  # cached read, but callers may mutate their list
    with pytest.raises(AttributeError):
        pairs[0].query = "changed"  # type: ignore[misc]


def test_textdata_imports_nothing_from_embg_but_errors_and_registry():
    """A bottom package (tests/test_import_layers.py checks the whole order; this names its two needs)."""
    allowed = {"embg.errors", "embg.registry", "embg.textdata"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if isinstance(node, ast.ImportFrom) and node.level:
                names = ["embg.textdata." + (node.module or "")]
            if isinstance(node, ast.ImportFrom) and node.module == "embg":
                names = [f"embg.{a.name}" for a in node.names]
            for name in names:
                if name == "embg" or name.startswith("embg."):
                    assert any(name == a or name.startswith(a + ".") for a in allowed), f"{path.name} imports {name}"


def test_validate_texts_retrieval_resolves_to_all_pairs():
    from embg.cli.validate import build_parser

    args = build_parser().parse_args(["bundle", "--texts", "retrieval"])
    rows = load_texts_file(args.texts)  # what embg.validate.inputs.prepare does with --texts
    queries = [t for t in rows if t.is_query]
    documents = [t for t in rows if t.is_document]
    assert len(queries) >= 400 and len(documents) >= 400
    assert {t.kind for t in rows} == {"retrieval"}
    assert [t.text for t in queries] == [p.query for p in textdata.retrieval_pairs()]
    assert load_texts_file(build_parser().parse_args(["bundle", "--texts", "builtin"]).texts) == builtin_texts()


def test_a_file_wins_over_a_set_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("retrieval").write_text("one line\n", encoding="utf-8")
    assert [t.text for t in load_texts_file(Path("retrieval"))] == ["one line", "one line"]


def test_a_missing_file_names_the_sets(tmp_path):
    from embg.errors import EmbgError

    with pytest.raises(EmbgError, match="named sets: builtin, retrieval"):
        load_texts_file(tmp_path / "retreival")


def test_committed_files_match_the_generator():
    recorded = textdata.retrieval_pairs()[0].source  # "python-stdlib-docstring (CPython 3.11.7)"
    running = f"({platform.python_implementation()} {platform.python_version()})"
    if not recorded.endswith(running):
        pytest.skip(f"the data was generated with {recorded}; this is {running} and its docstrings differ")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_textdata.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
