"""embg-validate end to end on tiny fixture bundles: pass, broken bundle, baseline, HTML, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import named_copy, reseal, run_cli
from onnx import numpy_helper

from embg.cli.validate import main
from embg.bundle import Artifact
from embg.bundle import file_sha256


TFLITE_SEQ_LENS = (32, 128)


def run_main(args: list) -> tuple[int, str, str]:
    return run_cli(main, args)


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    # Shared exports, copied under the names the report rows are checked against.
    root = tmp_path_factory.mktemp("validate-bundles")
    made = {}
    for bits in (32, 8):
        made[f"onnx{bits}"] = named_copy(tiny_bundle("onnx", bits), root / f"onnx{bits}")
        made[f"tflite{bits}"] = named_copy(tiny_bundle("tflite", bits, TFLITE_SEQ_LENS), root / f"tflite{bits}")
    return made


@pytest.fixture(scope="module")
def passing_run(bundles, tiny_dir, tmp_path_factory):
    report = tmp_path_factory.mktemp("report-pass")
    code, out, err = run_main([*bundles.values(), "--model", tiny_dir, "--report", report, "--latency-repeats", 2])
    return code, out, err, report


# Today's ONNX int8 recipe computes one activation scale per tensor (dynamic int8), so a text's embedding moves
# with its batch neighbours: the only check that bundle may fail is alone-vs-batched consistency.
BATCH_DEPENDENT = {"onnx8": {"batch_consistency.cosine_min"}}


def failing_checks(entry: dict) -> set[str]:
    return {c["metric"] for c in entry["checks"] if not c["passed"]}


def test_fixture_bundles_pass_the_gate(passing_run, bundles):
    code, out, err, report = passing_run
    data = json.loads((report / "report.json").read_text())
    failing = {entry["name"]: failing_checks(entry) for entry in data["bundles"]}
    assert all(found <= BATCH_DEPENDENT.get(name, set()) for name, found in failing.items()), failing
    passed = not any(failing.values())
    assert code == (0 if passed else 1) and data["passed"] == passed, out + err
    status = "PASS" if passed else "FAIL"
    assert f"embg-validate: {status}" in out
    assert "[embg]" in err  # progress goes to stderr
    assert (report / "summary.md").read_text().startswith(f"## embg-validate: {status}")
    assert [b["name"] for b in data["bundles"]] == list(bundles)


def test_report_json_has_every_field(passing_run, bundles):
    data = json.loads((passing_run[3] / "report.json").read_text())
    assert data["schema"] == 1
    for key in ("created", "command", "device", "versions", "reference", "texts", "settings", "thresholds",
                "baseline_margins", "bundles", "failures"):
        assert key in data, key
    assert {"platform", "machine", "python", "cpu_count"} <= set(data["device"])
    assert {"onnxruntime", "torch", "transformers"} <= set(data["versions"])
    assert data["reference"]["runtime"] == "sentence-transformers"
    assert data["texts"]["count"] >= 30 and data["texts"]["by_kind"]["long"] >= 1
    for entry in data["bundles"]:
        bundle = bundles[entry["name"]]
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert entry["manifest_sha256"] == file_sha256(bundle / "manifest.json")
        assert entry["runtime"]["runtime"] == manifest["runtime"]
        m = entry["metrics"]
        assert {"texts", "cosine_min", "cosine_p1", "cosine_mean", "max_abs_diff", "nonfinite"} <= set(m["drift"])
        assert m["drift"]["nonfinite"] == 0 and m["drift"]["texts"] == data["texts"]["count"]
        assert {"top10_overlap_mean", "spearman_mean", "kendall_mean", "cross_recall_at_10"} <= set(m["retrieval"])
        assert sorted(map(int, m["matryoshka"])) == sorted(manifest["matryoshka_dims"])
        assert m["latency"]["cold_load_s"] > 0 and m["latency"]["first_embed_s"] > 0
        buckets = m["latency"]["buckets"]
        if manifest.get("signatures"):  # fixed-shape bundles are timed exactly at their signatures
            assert sorted(b["seq_len"] for b in buckets.values()) == sorted(TFLITE_SEQ_LENS)
        else:
            assert set(buckets) == {f"seq{n}_b{b}" for n in (16, 64, 256) for b in (1, 4)}
        assert all(b["p90_ms"] >= b["p50_ms"] > 0 for b in buckets.values())
        assert 0 < m["memory"]["runtime_rss_mb"] < m["memory"]["peak_rss_mb"]
        assert m["memory"]["output_finite"]
        assert m["size"]["model_file_mb"] == pytest.approx(Artifact.load(bundle).model_path.stat().st_size / 2**20,
                                                           abs=1e-3)
        # every gated value carries its limit, and the limits come from the table of the recipe's class
        assert entry["threshold_class"] == ("fp32" if entry["recipe"] == "fp32" else "int8")
        gated = {c["metric"] for c in entry["checks"]}
        assert {"drift.cosine_min", "drift.cosine_p1", "drift.cosine_mean", "drift.max_abs_diff", "drift.nonfinite",
                "retrieval.top10_overlap_mean", "retrieval.spearman_mean", "retrieval.cross_recall_at_10"} <= gated
        assert all(c["op"] in (">=", "<=") for c in entry["checks"])
        assert failing_checks(entry) <= BATCH_DEPENDENT.get(entry["name"], set())
        # the parity path's modes, the worst of them as the headline, and the bundle's own tokenizer checked
        assert set(m["drift_by_mode"]) == {"alone", "batched"} | ({"padded_512"} if not manifest.get("signatures")
                                                                   else set())
        assert m["drift"]["cosine_min"] == min(d["cosine_min"] for d in m["drift_by_mode"].values())
        assert m["tokenizer"]["mismatched_texts"] == 0 and m["tokenizer"]["texts"] == data["texts"]["count"]
        assert {"batch_consistency.cosine_min", "tokenizer.mismatched_texts"} <= gated
        assert sum(entry["cosine_histogram"]["counts"]) == data["texts"]["count"]


def _break_weights(bundle: Path, out: Path) -> Path:
    """Scale one MLP gate weight by 3 inside the .onnx (gate -> GELU is not scale-invariant, unlike
    projections followed by Gemma 3's RMSNorms): the file no longer matches the checkpoint."""
    shutil.copytree(bundle, out)
    artifact = Artifact.load(out)
    model = onnx.load(str(artifact.model_path))
    target = next(t for t in model.graph.initializer if t.name == "layers.2.mlp.gate_proj.weight")
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(3.0), target.name))
    onnx.save(model, str(artifact.model_path))
    return reseal(out)  # hashes rewritten to match: past the integrity check, the numbers must catch it


def test_broken_bundle_fails_naming_the_metric(bundles, tiny_dir, tmp_path):
    broken = _break_weights(bundles["onnx32"], tmp_path / "broken")
    code, out, err = run_main([broken, "--model", tiny_dir, "--report", tmp_path / "r", "--latency-repeats", 1,
                               "--no-memory"])
    assert code == 1, out + err
    assert "FAIL" in out and "drift.cosine_min" in out
    data = json.loads((tmp_path / "r" / "report.json").read_text())  # the report is still written
    failing = {c["metric"] for c in data["bundles"][0]["checks"] if not c["passed"]}
    assert {"drift.cosine_min", "drift.cosine_mean"} <= failing
    assert (tmp_path / "r" / "report.html").is_file()


def test_baseline_regression_fails_and_shows_change(passing_run, bundles, tiny_dir, tmp_path, monkeypatch):
    from embg.validate import gate

    # per-token int8 on the tiny fixture drifts less than the default 0.001 margin (cosine min ~0.9992):
    # a tighter drift margin keeps this a regression whatever the quantizer's exact figure
    margins = tuple((p, k, 0.0001 if p == "drift.cosine_min" else m) for p, k, m in gate.BASELINE_MARGINS)
    monkeypatch.setattr(gate, "BASELINE_MARGINS", margins)
    baseline = json.loads((passing_run[3] / "report.json").read_text())
    for entry in baseline["bundles"]:
        for bucket in entry["metrics"]["latency"]["buckets"].values():
            bucket["p50_ms"] *= 1000.0  # a slow baseline: latency never regresses (timing is not asserted)
        if entry["name"] == "onnx8":
            entry["metrics"]["drift"]["cosine_min"] = 1.0  # a better baseline: int8 drifts more than the margin
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    code, out, err = run_main([bundles["onnx32"], bundles["onnx8"], "--model", tiny_dir, "--report", tmp_path / "r",
                               "--baseline", path, "--latency-repeats", 1, "--no-memory"])
    assert code == 1, out + err
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    fp32, int8 = data["bundles"]
    assert fp32["passed"] and not int8["passed"]
    regress = next(c for c in int8["checks"] if c["metric"] == "drift.cosine_min" and c["source"] == "baseline")
    assert not regress["passed"] and regress["baseline"] == 1.0 and regress["change"] < -0.0001
    assert [c["metric"] for c in int8["checks"] if not c["passed"] and c["source"] == "baseline"] == [
        "drift.cosine_min"]
    latency = [c for c in fp32["checks"] if c["source"] == "baseline" and c["metric"].startswith("latency.")]
    assert latency and all(c["passed"] and c["change"] < 0 for c in latency)
    assert "drift.cosine_min" in out and "baseline 1" in out
    assert "baseline" in (tmp_path / "r" / "report.html").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_report_renders_in_headless_chromium(passing_run, bundles, tmp_path):
    from tests.conftest import require_tool

    require_tool(CHROMIUM is not None, "chromium", "apt-get install -y chromium")
    page = (passing_run[3] / "report.html").resolve()
    html = page.read_text()
    for remote in ('src="http', "href=\"http", "<link", "url(http", "<script src"):  # self-contained page
        assert remote not in html, remote
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
            "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and "CONSOLE" not in done.stderr.upper().replace("CONSOLE(", "")
    dom = done.stdout
    # the inline script ran (no JS error before it) and counted the SVG plots it found
    expected = 2 + len(bundles)
    assert f"plots rendered: {expected}" in dom
    for element_id in ["plot-latency", "plot-size-drift", *[f"plot-cosine-hist-{i}" for i in range(len(bundles))]]:
        start = dom.index(f'id="{element_id}"')
        assert "<svg" in dom[start:start + 400], element_id
    shot = tmp_path / "shot.png"
    subprocess.run([*base, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000


# ---------------------------------------------------------------- bad input: exit 2, one clear line

def _copy_with_manifest(bundle: Path, out: Path, edit) -> Path:
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _other_weights(m):
    m["model"]["weights_sha256"] = "0" * 64


BAD_INPUT = {
    "missing bundle": (lambda b, t: [t / "nope"], "bundle directory not found"),
    "missing model file": (lambda b, t: [_drop_model_file(b, t)], "lacks the file"),
    "different model": (lambda b, t: [_copy_with_manifest(b, t / "other", _other_weights)],
                        "different weights than --model"),
    "unknown runtime": (lambda b, t: [b, "--runtime", "nope"], "unknown runtime 'nope'"),
    "wrong runtime for target": (lambda b, t: [b, "--runtime", "litert"], "runs tflite bundles"),
    "empty texts": (lambda b, t: [b, "--texts", _write(t / "empty.txt", "\n \n")], "is empty"),
    "missing texts": (lambda b, t: [b, "--texts", t / "none.txt"], "texts file not found"),
    "unknown task": (lambda b, t: [b, "--texts", _write(t / "t.jsonl", '{"task": "qurey", "text": "x"}\n')],
                     "unknown task"),
    "bad baseline": (lambda b, t: [b, "--baseline", _write(t / "b.json", '{"schema": 99}')], "not an embg-validate"),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _drop_model_file(bundle: Path, tmp: Path) -> Path:
    out = tmp / "nomodel"
    shutil.copytree(bundle, out)
    Artifact.load(out).model_path.unlink()
    return out


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_a_clear_message(case, bundles, tiny_dir, tmp_path):
    build, message = BAD_INPUT[case]
    code, out, err = run_main([*build(bundles["onnx8"], tmp_path), "--model", tiny_dir, "--report", tmp_path / "r"])
    assert code == 2, out + err
    assert message in err and "embg-validate: error:" in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_missing_model_exits_2(bundles, tmp_path):
    code, _, err = run_main([bundles["onnx8"], "--model", tmp_path / "no-such-checkpoint", "--report", tmp_path / "r"])
    assert code == 2 and "no such directory" in err


def test_model_defaults_to_the_manifest_model(bundles, tmp_path):
    # the bundle was exported from the tiny directory, recorded in the manifest: no --model needed
    text = _write(tmp_path / "t.txt", "how do I reset my password\nSettings > Account > Reset password\n")
    code, out, err = run_main([bundles["onnx32"], "--texts", text, "--report", tmp_path / "r", "--latency-repeats", 1,
                               "--no-memory"])
    assert code == 0, out + err
    assert json.loads((tmp_path / "r" / "report.json").read_text())["texts"]["source"] == str(text)


# ---------------------------------------------------------------- output hygiene

NATIVE_LOG = ("INFO: ", "WARNING: ", "ERROR: ", "VERBOSE: ", "└")


def test_stdout_carries_only_the_summary_and_native_logs_stay_quiet(bundles, tiny_dir, tmp_path):
    """A real process (LiteRT logs ~35 native lines on load and at exit, which in-process capture cannot see)."""
    import os
    import sys

    texts = tmp_path / "t.txt"
    texts.write_text("how do I reset my password\nSettings > Account > Reset password\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "EMBG_XNNPACK_CACHE": str(tmp_path / "xnnpack")}
    done = subprocess.run([sys.executable, "-m", "embg.cli.validate", str(bundles["tflite8"]), "--model", str(tiny_dir),
                           "--texts", str(texts), "--report", str(tmp_path / "r"), "--latency-repeats", "1",
                           "--no-memory"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("## embg-validate: PASS") and "[embg]" not in done.stdout
    native = [line for line in done.stderr.splitlines() if line.startswith(NATIVE_LOG)]
    assert not native, native[:5]


@pytest.mark.parametrize("verbose", [False, True])
def test_native_output_of_converters_never_reaches_stdout(verbose, tmp_path):
    import os
    import sys

    code = ("import os; from embg.quiet import captured_native_output\n"
            "with captured_native_output('converter'):\n"
            "    os.write(1, b'converter progress on fd 1\\n'); os.write(2, b'INFO: native log on fd 2\\n')\n"
            "print('/the/result')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("EMBG_VERBOSE", None)
    if verbose:
        env["EMBG_VERBOSE"] = "1"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/the/result\n"  # stdout: only the result, verbose or not
    shown = "converter progress on fd 1" in done.stderr and "native log on fd 2" in done.stderr
    assert shown == verbose, done.stderr  # --verbose shows native output, on stderr
