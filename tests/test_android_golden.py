"""Golden token ids for android_demo's JVM tokenizer, and the JVM tests themselves.

The Python side (embg's EmbedTokenizer on the tiny fixture) is the truth. Goldens are committed
under android_demo/core/src/test/resources/ so the JVM tests run without Python; this test fails
when embg would now write different goldens (drift), and then runs android_demo/core/test.sh.
Regenerate after an intended tokenizer change with EMBG_UPDATE_GOLDENS=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path


from embg.model.tokenizer import EmbedTokenizer
from embg.bundle import choose_bucket
from embg.textdata import builtin as base
from embg.textdata.sets import builtin_texts

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "android_demo" / "core"
RES = CORE / "src" / "test" / "resources"
GOLDEN = RES / "golden"
UPDATE = os.environ.get("EMBG_UPDATE_GOLDENS") == "1"

# Texts that stress the tokenizer beyond the evaluation set: added tokens typed by a user,
# whitespace runs, digits (split one by one), combining marks, ZWJ emoji, astral CJK, controls.
EXTRA = [
    ("literal_specials", "keep <bos> and <eos> and <pad> literal?", "query"),
    ("no_prompt_plain", "how do I reset my password", ""),
    ("sts_prompt", "A man is playing a guitar.", "STS"),
    ("digits", "Order 1234567890 shipped on 2024-03-05 at 17:45.", "document"),
    ("space_runs", "  two  spaces   three    four ", "document"),
    ("newlines_tabs", "line one\nline two\n\n\tindented\r\nwindows", "document"),
    ("combining", "cafe\u0301 vs café, Å vs A\u030a", "query"),
    ("zwj_emoji", "family 👨‍👩‍👧‍👦 flag 🇨🇭 skin 👍🏽", "query"),
    ("astral_cjk", "𠀀𠀁 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "document"),
    ("control_chars", "nul\x00bell\x07esc\x1bdel\x7f", "document"),
    ("mixed_scripts", "Zürich Ζυρίχη Цюрих チューリッヒ 취리히 ซูริก", "query"),
    ("html_like", "<table><tr><td>x</td></tr></table> <b>bold</b>", "document"),
    ("underscores", "snake_case_name __dunder__ CamelCaseName", "document"),
    ("long_one_word", "x" * 300, "document"),
    ("just_prompt_space", " ", "query"),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cases(tok: EmbedTokenizer, buckets: list[int]) -> list[dict]:
    """One golden per text: ids exactly as embg would feed the model, and the bucket it picks."""
    rows = [(f"eval{i:02d}_{t.kind}_{t.task}", t.kind, t.text, t.task) for i, t in enumerate(builtin_texts())]
    rows += [(name, "tokenizer", text, prompt) for name, text, prompt in EXTRA]
    out = []
    for name, kind, text, prompt in rows:
        batch = tok.encode([text], prompt=prompt or None, max_length=buckets[-1])
        n = int(batch.attention_mask[0].sum())
        ids = [int(x) for x in batch.input_ids[0, :n]]
        out.append({"name": name, "kind": kind, "text": text, "prompt": prompt, "ids": ids,
                    "truncated": bool(batch.truncated), "bucket": choose_bucket(buckets, n)})
    return out


def _expected_files(tiny_dir: Path) -> dict[str, str]:
    manifest = json.loads((RES / "manifest.json").read_text(encoding="utf-8"))
    buckets = sorted(int(s["seq_len"]) for s in manifest["signatures"])
    tok = EmbedTokenizer(tiny_dir, manifest["prompts"], max_length=buckets[-1])
    cases = _cases(tok, buckets)
    assert any(c["truncated"] for c in cases), "no golden text is longer than the largest bucket"
    assert {c["bucket"] for c in cases} == set(buckets), "goldens must exercise every bucket"
    ids = {"tokenizer_sha256": _sha256(tiny_dir / "tokenizer.json"), "buckets": buckets,
           "pad_id": tok.pad_id, "cases": cases}
    # What the JVM Manifest parser must read from the committed manifest (its Python reading).
    parsed = {"model_file": manifest["model_file"], "embedding_dim": manifest["embedding_dim"],
              "matryoshka_dims": manifest["matryoshka_dims"], "prompts": manifest["prompts"],
              "signatures": [[s["name"], s["seq_len"]] for s in manifest["signatures"]],
              "inputs": [i["name"] for i in manifest["inputs"]], "output": manifest["outputs"][0]["name"],
              "bos_id": manifest["tokenizer"]["bos_id"], "eos_id": manifest["tokenizer"]["eos_id"],
              "pad_id": manifest["tokenizer"]["pad_id"],
              # bucket for every length 0..largest+10, through embg's own choose_bucket
              "bucket_for_length": [choose_bucket(buckets, n) for n in range(buckets[-1] + 11)]}
    dump = lambda obj: json.dumps(obj, ensure_ascii=False, indent=1) + "\n"  # noqa: E731
    return {"golden/tiny_ids.json": dump(ids), "golden/manifest_expected.json": dump(parsed)}


def test_committed_tokenizer_and_manifest_are_the_fixtures(tiny_dir):
    committed = RES / "tokenizer.json"
    if UPDATE:
        shutil.copyfile(tiny_dir / "tokenizer.json", committed)
    assert _sha256(committed) == _sha256(tiny_dir / "tokenizer.json"), (
        "android_demo's test tokenizer.json differs from the tiny fixture's: rerun with EMBG_UPDATE_GOLDENS=1")
    manifest = json.loads((RES / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tokenizer"]["files"]["tokenizer.json"] == _sha256(committed)
    from embg.fixtures import PROMPTS

    assert manifest["prompts"] == PROMPTS


def test_goldens_match_embg(tiny_dir):
    for rel, text in _expected_files(tiny_dir).items():
        path = RES / rel
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.is_file(), f"{rel} missing: run with EMBG_UPDATE_GOLDENS=1"
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), (
            f"{rel} no longer matches what embg produces: tokenizer drift? rerun with EMBG_UPDATE_GOLDENS=1 "
            "after checking the change is intended")


def test_goldens_cover_the_evaluation_texts():
    golden = json.loads((GOLDEN / "tiny_ids.json").read_text(encoding="utf-8"))
    texts = {c["text"] for c in golden["cases"]}
    for t in [*base.QUERIES, *base.DOCUMENTS, *base.CODE, *base.EDGE, base.LONG_DOCUMENT]:
        assert t in texts
    assert any(c["kind"] == "long" and c["truncated"] for c in golden["cases"])


def test_jvm_core_tests_pass():
    from tests.conftest import require_tool

    missing = [tool for tool in ("javac", "java") if shutil.which(tool) is None]
    require_tool(not missing and Path("/usr/share/java/junit-platform-console-standalone.jar").is_file(),
                 f"JDK or JUnit 5 ({', '.join(missing) or 'junit-platform-console-standalone.jar'})",
                 "apt-get install -y default-jdk-headless junit5")
    proc = subprocess.run(["bash", str(CORE / "test.sh")], capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, flags=re.M)
    assert summary, tail
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed >= 10, tail
