"""A damaged or tampered bundle never crashes the validator and never passes.

Every case runs embg-validate on a copy of a tiny bundle with one thing broken: truncated or
flipped model bytes, swapped files, edited manifest fields, tokenizer files replaced or with two
ids swapped, with and without the manifest's hashes rewritten to match ("resealed"). Each must
end with exit status 2 and one error line (naming what is wrong) or exit 1 with a report, never a
crash (signal), never a PASS. The cases run in one child process so a native crash (LiteRT
segfaults on a truncated .tflite) fails the test naming the case instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from embg.errors import EmbgError
from embg.bundle import Artifact
from tests.conftest import reseal

TFLITE_SEQ_LENS = (32, 128)
TEXTS = "how do I reset my password\nSettings > Account > Reset password\nbest hiking trails near Zurich\n"


# ---------------------------------------------------------------- damage, one function per kind

def _model(bundle: Path) -> Path:
    return bundle / json.loads((bundle / "manifest.json").read_text())["model_file"]


def truncate(fraction: float, resealed: bool = False) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        path = _model(bundle)
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])
        if resealed:
            reseal(bundle)
        return path.name
    return damage


def flip(where: str, resealed: bool = False) -> Callable[[Path], str]:
    """XOR bytes of the model file: its header (.tflite: the TFL3 identifier at 4..8; .onnx: the first
    protobuf field tags at 0..4) or its middle."""
    def damage(bundle: Path) -> str:
        path = _model(bundle)
        data = bytearray(path.read_bytes())
        start = len(data) // 2 if where != "header" else 4 if path.suffix == ".tflite" else 0
        for k in range(start, start + (4 if where == "header" else 4096)):
            data[k] ^= 0x5A
        path.write_bytes(bytes(data))
        if resealed:
            reseal(bundle)
        return path.name
    return damage


def swap(a: str, b: str, resealed: bool = False) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        first = _model(bundle) if a == "MODEL" else bundle / a
        second = bundle / b
        one, two = first.read_bytes(), second.read_bytes()
        first.write_bytes(two)
        second.write_bytes(one)
        if resealed:
            reseal(bundle)
        return first.name
    return damage


def random_bytes(name: str, resealed: bool) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        path = bundle / name
        path.write_bytes(os.urandom(max(64, path.stat().st_size // 10)))
        if resealed:
            reseal(bundle)
        return name
    return damage


def swapped_token_ids(bundle: Path) -> str:
    """Two pieces of tokenizer.json that the texts use trade ids; hashes resealed (a consistent bundle)."""
    path = bundle / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["▁reset"], vocab["▁password"] = vocab["▁password"], vocab["▁reset"]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    reseal(bundle)
    return "reset my password"


def edit(change: Callable[[dict], None], needle: str) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        path = bundle / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
        return needle
    return damage


def raw_manifest(data: bytes, needle: str) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        (bundle / "manifest.json").write_bytes(data)
        return needle
    return damage


def delete(name: str) -> Callable[[Path], str]:
    def damage(bundle: Path) -> str:
        path = _model(bundle) if name == "MODEL" else bundle / name
        path.unlink()
        return path.name
    return damage


def symlink_outside(bundle: Path) -> str:
    path = _model(bundle)
    outside = bundle.parent / f"outside-{bundle.name}{path.suffix}"
    shutil.copy2(path, outside)
    path.unlink()
    path.symlink_to(outside)
    return "outside the bundle"


def _set(path: str, value):
    def change(manifest: dict) -> None:
        *parents, leaf = path.split(".")
        node = manifest
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value
    return change


def _wrong_digest(manifest: dict) -> None:
    name = manifest["model_file"]
    manifest["file_sha256"][name] = "0" * 64


def _signature_len(manifest: dict) -> None:
    manifest["signatures"][0]["seq_len"] = 64


# name -> (damage, targets it applies to, allowed exit statuses)
CASES: dict[str, tuple[Callable[[Path], str], tuple[str, ...], tuple[int, ...]]] = {
    "truncate-10%": (truncate(0.10), ("tflite", "onnx"), (2,)),
    "truncate-50%": (truncate(0.50), ("tflite", "onnx"), (2,)),
    "truncate-99%": (truncate(0.99), ("tflite", "onnx"), (2,)),
    "truncate-50%-resealed": (truncate(0.50, resealed=True), ("tflite", "onnx"), (2,)),
    "truncate-99%-resealed": (truncate(0.99, resealed=True), ("tflite", "onnx"), (2,)),
    "flip-header": (flip("header"), ("tflite", "onnx"), (2,)),
    "flip-middle": (flip("middle"), ("tflite", "onnx"), (2,)),
    "flip-header-resealed": (flip("header", resealed=True), ("tflite", "onnx"), (2,)),
    "swap-model-and-tokenizer": (swap("MODEL", "tokenizer.json"), ("tflite", "onnx"), (2,)),
    "swap-tokenizer-files-resealed": (swap("tokenizer.json", "tokenizer_config.json", resealed=True),
                                      ("tflite", "onnx"), (2,)),
    "tokenizer.json-random": (random_bytes("tokenizer.json", False), ("tflite", "onnx"), (2,)),
    "tokenizer.json-random-resealed": (random_bytes("tokenizer.json", True), ("tflite", "onnx"), (2,)),
    "tokenizer.model-random-resealed": (random_bytes("tokenizer.model", True), ("tflite", "onnx"), (2,)),
    "token-ids-swapped-resealed": (swapped_token_ids, ("tflite", "onnx"), (1,)),
    "model_file-parent": (edit(_set("model_file", "../../x"), "outside the bundle"), ("tflite", "onnx"), (2,)),
    "model_file-absolute": (edit(_set("model_file", "/etc/hostname"), "outside the bundle"), ("tflite", "onnx"), (2,)),
    "model-file-symlink-outside": (symlink_outside, ("tflite", "onnx"), (2,)),
    "files-without-model": (edit(_set("files", []), "files"), ("tflite", "onnx"), (2,)),
    "embedding_dim-string": (edit(_set("embedding_dim", "192"), "embedding_dim"), ("tflite", "onnx"), (2,)),
    "embedding_dim-zero": (edit(_set("embedding_dim", 0), "embedding_dim"), ("tflite", "onnx"), (2,)),
    "max_sequence_length-zero": (edit(_set("max_sequence_length", 0), "max_sequence_length"), ("tflite", "onnx"),
                                 (2,)),
    "signatures-empty": (edit(_set("signatures", []), "signatures"), ("tflite",), (2,)),
    "signature-wrong-length": (edit(_signature_len, "the manifest says [1, 64]"), ("tflite",), (2,)),
    "target-unknown": (edit(_set("target", "coreml"), "coreml"), ("tflite", "onnx"), (2,)),
    "runtime-unknown": (edit(_set("runtime", "nope"), "nope"), ("tflite", "onnx"), (2,)),
    "tokenizer-files-empty": (edit(_set("tokenizer.files", {}), "tokenizer.files"), ("tflite", "onnx"), (2,)),
    "hashes-removed": (edit(_set("file_sha256", KeyError), "file_sha256"), ("tflite", "onnx"), (2,)),
    "hash-wrong": (edit(_wrong_digest, "differs from the manifest"), ("tflite", "onnx"), (2,)),
    "schema-2": (edit(_set("schema", 2), "schema"), ("tflite", "onnx"), (2,)),
    "prompts-removed": (edit(_set("prompts", KeyError), "prompts"), ("tflite", "onnx"), (2,)),
    "other-weights": (edit(_set("model.weights_sha256", "0" * 64), "different weights"), ("tflite", "onnx"), (2,)),
    "manifest-not-json": (raw_manifest(b"{schema: 1", "not valid JSON"), ("tflite", "onnx"), (2,)),
    "manifest-a-list": (raw_manifest(b"[1, 2]", "schema"), ("tflite", "onnx"), (2,)),
    "manifest-not-utf8": (raw_manifest(b"\xff\xfe{}", "UTF-8"), ("tflite",), (2,)),
    "model-file-deleted": (delete("MODEL"), ("tflite", "onnx"), (2,)),
    "tokenizer.json-deleted": (delete("tokenizer.json"), ("tflite", "onnx"), (2,)),
}


def _damaged(root: Path, bundles: dict[str, Path]) -> list[dict]:
    cases = []
    for name, (damage, targets, allowed) in CASES.items():
        for target in targets:
            copy = root / f"{target}-{name}"
            shutil.copytree(bundles[target], copy, symlinks=True)
            needle = damage(copy)
            cases.append({"name": f"{target}/{name}", "bundle": str(copy), "allowed": list(allowed), "needle": needle})
    return cases


@pytest.fixture(scope="module")
def bundles(tiny_bundle) -> dict[str, Path]:
    return {"onnx": tiny_bundle("onnx", 8), "tflite": tiny_bundle("tflite", 8, TFLITE_SEQ_LENS)}


def test_damaged_bundles_never_crash_and_never_pass(bundles, tiny_dir, tmp_path):
    cases = _damaged(tmp_path / "damaged", bundles)
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS, encoding="utf-8")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"cases": cases, "model": str(tiny_dir), "texts": str(texts),
                                "reports": str(tmp_path / "reports")}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "EMBG_XNNPACK_CACHE": str(tmp_path / "xnnpack")}
    done = subprocess.run([sys.executable, "-m", "tests.test_bundle_integrity", str(plan)], capture_output=True,
                          text=True, env=env, timeout=3000)
    results = {r["name"]: r for r in map(json.loads, done.stdout.splitlines()) if r.get("name")}
    started = [line.split(" ", 1)[1] for line in done.stderr.splitlines() if line.startswith("CASE ")]
    assert done.returncode == 0, (f"the child died (status {done.returncode}) during case "
                                  f"{started[-1] if started else '?'}: {done.stderr[-2000:]}")
    problems = []
    for case in cases:
        result = results.get(case["name"])
        if result is None:
            problems.append(f"{case['name']}: no result")
            continue
        code, err = result["code"], result["err"]
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if code not in case["allowed"]:
            problems.append(f"{case['name']}: exit {code}, expected {case['allowed']}: {lines[-3:]}")
        elif "Traceback" in err:
            problems.append(f"{case['name']}: traceback")
        elif code == 2:
            errors = [line for line in lines if line.startswith("embg-validate: error:")]
            if len(errors) != 1 or lines[-1] != errors[0]:
                problems.append(f"{case['name']}: not one error line: {lines[-3:]}")
            elif case["needle"].lower() not in errors[0].lower():
                problems.append(f"{case['name']}: {case['needle']!r} not named in {errors[0]!r}")
        elif code == 1:
            report = json.loads(Path(result["report"], "report.json").read_text())
            if report["passed"] or not report["failures"]:
                problems.append(f"{case['name']}: exit 1 without a failing report")
            elif case["needle"] not in " ".join(report["failures"]):
                problems.append(f"{case['name']}: {case['needle']!r} not named in {report['failures']}")
    assert not problems, "\n".join(problems)


def _child(plan_path: str) -> int:
    """Run every case in this one process (see the module docstring); one JSON line per case on stdout."""
    from embg.cli.validate import main

    plan = json.loads(Path(plan_path).read_text())
    for number, case in enumerate(plan["cases"]):
        print(f"CASE {case['name']}", file=sys.stderr, flush=True)
        report = Path(plan["reports"]) / str(number)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([case["bundle"], "--model", plan["model"], "--texts", plan["texts"], "--report",
                             str(report), "--latency-repeats", "1", "--no-memory"])
            except BaseException as exc:  # noqa: BLE001 - an escaped exception is what the test reports
                import traceback

                traceback.print_exc()
                code = f"raised {type(exc).__name__}"
        print(json.dumps({"name": case["name"], "code": code, "out": out.getvalue(), "err": err.getvalue(),
                          "report": str(report)}), flush=True)
    return 0


# ---------------------------------------------------------------- single rows, in process

def test_a_file_from_another_bundle_fails_its_hash(tiny_bundle, tmp_path):
    """The int8 model file copied into the fp32 bundle (same name): refused, not validated as fp32."""
    bundle = shutil.copytree(tiny_bundle("tflite", 32, TFLITE_SEQ_LENS), tmp_path / "fp32")
    shutil.copy2(Artifact.load(tiny_bundle("tflite", 8, TFLITE_SEQ_LENS)).model_path, _model(bundle))
    with pytest.raises(EmbgError, match=rf"{_model(bundle).name}: sha256 .* differs from the manifest"):
        Artifact.load(bundle).verify()


def test_truncated_tflite_with_matching_hashes_is_refused_by_its_structure(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle("tflite", 8, TFLITE_SEQ_LENS), tmp_path / "t")
    truncate(0.9, resealed=True)(bundle)
    with pytest.raises(EmbgError, match=r"is not a valid \.tflite file \(.*past the end"):
        Artifact.load(bundle).verify()


def test_onnx_external_data_must_stay_inside_the_bundle(tiny_bundle, tmp_path):
    import onnx

    bundle = shutil.copytree(tiny_bundle("onnx", 32), tmp_path / "external")
    path = _model(bundle)
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = [path.name, path.name + ".data"]
    manifest["file_sha256"][path.name + ".data"] = ""
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    reseal(bundle)
    Artifact.load(bundle).verify()  # control: external data inside the bundle is fine

    moved = bundle.parent / "elsewhere.data"
    shutil.move(str(bundle / (path.name + ".data")), moved)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.data"
    onnx.save_model(model, str(path))
    manifest["files"] = [path.name]
    del manifest["file_sha256"][path.name + ".data"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    reseal(bundle)
    with pytest.raises(EmbgError, match="outside the bundle"):
        Artifact.load(bundle).verify()


def test_every_device_runner_verifies_before_it_copies_anything(tiny_bundle, tmp_path, monkeypatch):
    """Each registered device kind refuses a damaged bundle before any process, copy or push starts."""
    from embg.devices import DEVICES, load_devices

    load_devices()
    bundle = shutil.copytree(tiny_bundle("tflite", 8, TFLITE_SEQ_LENS), tmp_path / "damaged")
    flip("middle")(bundle)

    def touched(*args, **kwargs):
        raise AssertionError(f"the device was contacted before the bundle was verified: {args[:1]}")

    monkeypatch.setattr(subprocess, "run", touched)
    monkeypatch.setattr(subprocess, "Popen", touched)
    monkeypatch.setattr(shutil, "copy2", touched)
    specs = {"ssh": "pi@raspberrypi.invalid", "adb": "emulator-5554", "aihub": "Samsung Galaxy S25 (Family)"}
    for kind in DEVICES.names():
        runner = DEVICES.get(kind)(specs.get(kind, ""))
        engine = "litert"
        with pytest.raises(EmbgError, match="sha256 .* differs from the manifest"):
            runner.open(Artifact.load(bundle), engine, threads=1)


def test_checkpoint_without_tokenizer_files_is_refused(tiny_dir, tiny_bundle, tmp_path, capsys):
    from embg.cli.validate import main as validate
    from tests.conftest import run_cli
    from tests.test_loading import assert_refused

    checkpoint = shutil.copytree(tiny_dir, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (checkpoint / name).unlink(missing_ok=True)
    assert_refused(["--model", str(checkpoint), "--target", "onnx", "--bits", "8"], tmp_path / "out", capsys,
                   "no tokenizer", str(checkpoint))
    code, out, err = run_cli(validate, [tiny_bundle("onnx", 8), "--model", checkpoint, "--report", tmp_path / "r"])
    assert code == 2 and "no tokenizer" in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "report.json").exists()


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1]))
