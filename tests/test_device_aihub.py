"""The aihub device (Qualcomm AI Hub) against a stand-in `qai_hub` (tests/fakes/qai_hub): no farm, no
phone, no network is involved, and everything the runner returns must say so."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from tests.conftest import STAND_IN_TFLITE, reseal, run_cli

FAKES = Path(__file__).resolve().parent / "fakes"
PHONE = "Samsung Galaxy S25 (Family)"
OTHER_PHONE = "Samsung Galaxy S24 (Family)"
TOKEN = "tok-3f9a-do-not-print"


def _client_ini(path: Path, body: str | None = None) -> Path:
    path.write_text(body if body is not None else
                    f"[api]\napi_token = {TOKEN}\napi_url = https://app.aihub.qualcomm.com\n"
                    "web_url = https://app.aihub.qualcomm.com\n", encoding="utf-8")
    return path


@pytest.fixture
def farm(tmp_path, monkeypatch):
    """The stand-in client first on the import path (a fresh module per test), credentials, a job log."""
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("qai_hub", None)
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(_client_ini(tmp_path / "client.ini")))
    log = tmp_path / "farm.jsonl"
    monkeypatch.setenv("EMBG_FAKE_AIHUB_LOG", str(log))
    for name in ("REFUSE_COMPILE", "FAIL_AFTER", "PERTURB", "NAN", "BARRIER"):
        monkeypatch.delenv(f"EMBG_FAKE_AIHUB_{name}", raising=False)
    for name in ("EMBG_AIHUB_COMPUTE_UNIT", "EMBG_AIHUB_TARGET_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    yield log
    sys.modules.pop("qai_hub", None)


def _jobs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _validate(bundle, tmp_path, *options: str, device: str = f"aihub:{PHONE}"):
    from embg.cli.validate import main as validate_main

    report_dir = tmp_path / "report"
    extra = [a for option in options for a in ("--device-option", option)]
    code, out, err = run_cli(validate_main, [bundle, "--device", device, *extra, "--quick", "--latency-repeats", 2,
                                             "--report", report_dir])
    path = report_dir / "report.json"
    return code, out, err, json.loads(path.read_text()) if path.exists() else None


# -- refused before any slow work -------------------------------------------------------------------

@pytest.mark.parametrize("ini", [None, "api_token = tok-3f9a-do-not-print\n", "[api]\napi_url = https://x\n"])
def test_without_credentials_exit_2_with_one_line(tiny_bundle, farm, tmp_path, monkeypatch, ini):
    path = tmp_path / "other.ini"
    if ini is not None:
        _client_ini(path, ini)  # no [api] header (the parser would quote the token line), or no token
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(path))
    code, out, err, report = _validate(tiny_bundle(*STAND_IN_TFLITE), tmp_path)
    assert code == 2 and report is None
    lines = [line for line in err.splitlines() if not line.startswith("[embg]")]
    assert len(lines) == 1 and "qai-hub configure --api_token" in lines[0] and str(path) in lines[0]
    assert TOKEN not in out + err
    assert "loading the reference" not in err  # refused before the reference model loads
    assert not farm.exists()  # nothing reached the client


def test_missing_client_gives_an_install_hint(tiny_bundle, farm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "qai_hub", None)  # import qai_hub now raises ImportError
    code, out, err, report = _validate(tiny_bundle(*STAND_IN_TFLITE), tmp_path)
    assert code == 2 and report is None
    assert "pip install 'embg-export[aihub]'" in err and "loading the reference" not in err


@pytest.mark.parametrize("args, message", [
    (("compute_unit=tpu",), "choose one of cpu, gpu, npu"),
    (("target_runtime=coreml",), "choose one of tflite, onnx, qnn"),
    (("target_runtime=qnn",), "takes onnx bundles"),  # QNN is compiled from ONNX; a .tflite cannot be
    (("compute_unit",), "expected KEY=VALUE"),
])
def test_bad_options_are_bad_input(tiny_bundle, farm, tmp_path, args, message):
    code, out, err, _ = _validate(tiny_bundle(*STAND_IN_TFLITE), tmp_path, *args)
    assert code == 2 and message in err
    assert not any(job["op"] == "upload" for job in _jobs(farm))


def test_device_name_is_required(farm):
    from embg.devices import load_devices, parse_device
    from embg.errors import EmbgError

    load_devices()
    with pytest.raises(EmbgError, match="needs a device name"):
        parse_device("aihub:")


def test_bundle_files_are_checked_before_upload(tiny_bundle, farm, tmp_path):
    bundle = tmp_path / "tampered"
    shutil.copytree(tiny_bundle(*STAND_IN_TFLITE), bundle)
    (bundle / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    code, out, err, _ = _validate(bundle, tmp_path)
    assert code == 2 and "tokenizer_config.json: sha256" in err and "differs from the manifest" in err
    assert not any(job["op"] == "upload" for job in _jobs(farm))


# -- runs on the stand-in --------------------------------------------------------------------------

def test_tflite_bundle_on_the_stand_in_says_no_device(tiny_bundle, farm, tmp_path):
    code, out, err, report = _validate(tiny_bundle(*STAND_IN_TFLITE), tmp_path, "compute_unit=gpu")
    assert code == 0, out + err
    assert f"aihub:{PHONE}: NO DEVICE USED" in out  # in the printed summary, not only in the JSON
    (device,) = report["devices"]
    assert device["kind"] == "aihub" and device["real_device"] is False and device["stand_in"] is True
    assert device["compute_unit"] == "gpu" and device["target_runtime"] == "tflite"
    (entry,) = report["bundles"]
    assert entry["metrics"]["drift"]["cosine_min"] > 0.999  # host LiteRT behind the stand-in vs the reference
    latency = entry["metrics"]["latency"]
    assert all(b["clock"] == "device" for b in latency["buckets"].values())
    assert "NO DEVICE USED" in latency["device_load"]["source"]
    assert "NO DEVICE USED" in entry["metrics"]["memory"]["source"]
    assert set(entry["metrics"]["memory"]["buckets"]) == {"seq64", "seq256"}
    assert "runtime_rss_mb" in entry["metrics"]["memory"]["not_measured"]  # by design, not "missing", for the gate
    jobs = _jobs(farm)
    assert [j["op"] for j in jobs].count("upload") == 1 and not any(j["op"] == "compile" for j in jobs)
    inference = [j for j in jobs if j["op"] == "inference"]
    assert inference and all(j["options"] == "--compute_unit gpu" for j in inference)
    assert {tuple(j["shape"]) for j in inference} <= {(1, 64), (1, 256)}  # batch-1 samples, padded to a bucket


@pytest.mark.parametrize("fault, value, failure", [
    ("PERTURB", "0.05", "drift.cosine_min"),  # a device that computes wrongly
    ("NAN", "1", "drift.nonfinite"),    # what fp16 overflow gives: NaN rows are reported, not cast away
])
def test_outputs_are_compared_on_the_host(tiny_bundle, farm, tmp_path, monkeypatch, fault, value, failure):
    monkeypatch.setenv(f"EMBG_FAKE_AIHUB_{fault}", value)
    code, out, err, report = _validate(tiny_bundle(*STAND_IN_TFLITE), tmp_path)
    assert code == 1, out + err
    (entry,) = report["bundles"]
    assert entry["status"] == "ok" and entry["passed"] is False
    assert any(f.startswith(failure) for f in entry["failures"])


def test_refused_compile_ends_the_row_with_the_farms_reason(tiny_bundle, farm, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBG_FAKE_AIHUB_REFUSE_COMPILE", "npu")
    code, out, err, report = _validate(tiny_bundle("onnx", 32), tmp_path, "compute_unit=npu", "target_runtime=qnn")
    assert code == 1 and report is not None and report["partial"] is True
    (entry,) = report["bundles"]
    assert entry["status"] == "failed"
    assert "compile for seq" in entry["error"] and "is not supported by the NPU backend" in entry["error"]
    compiles = [j for j in _jobs(farm) if j["op"] == "compile"]
    assert compiles and all("--target_runtime qnn_dlc" in j["options"] for j in compiles)
    assert not any(j["op"] == "inference" for j in _jobs(farm))
    assert f"aihub:{PHONE}: NO DEVICE USED" in out  # a failed row still says what answered


def test_onnx_with_external_data_is_uploaded_as_one_directory(tiny_bundle, farm, tmp_path):
    import onnx

    bundle = tmp_path / "external"
    shutil.copytree(tiny_bundle("onnx", 32), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    name = manifest["model_file"]
    model = onnx.load(str(bundle / name))
    onnx.save_model(model, str(bundle / name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.data")
    manifest["files"] = [name, f"{name}.data"]
    manifest["size_bytes"] = sum((bundle / f).stat().st_size for f in manifest["files"])
    manifest["file_sha256"][f"{name}.data"] = ""
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    reseal(bundle)  # the hashes of the re-saved .onnx and its new .data file
    code, out, err, report = _validate(bundle, tmp_path)
    assert code == 0, out + err
    (upload,) = [j for j in _jobs(farm) if j["op"] == "upload"]
    assert upload["files"] == sorted(manifest["files"])  # the directory qai-hub expects: .onnx + .data
    assert report["bundles"][0]["metrics"]["drift"]["cosine_min"] > 0.9999


def test_job_failure_mid_run_ends_the_row(tiny_bundle, farm, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBG_FAKE_AIHUB_FAIL_AFTER", "2")
    code, out, err, report = _validate(tiny_bundle("onnx", 32), tmp_path)
    assert code == 1 and report["partial"] is True
    (entry,) = report["bundles"]
    assert entry["status"] == "failed" and "Device disconnected during inference" in entry["error"]
    statuses = [j["status"] for j in _jobs(farm) if j["op"] == "inference"]
    assert statuses == ["SUCCESS", "SUCCESS", "FAILED"]  # two jobs answered, the third ended the row
    assert "metrics" not in entry  # nothing the farm did not return is reported


def test_devices_toml_runs_farm_phones_concurrently(tiny_bundle, farm, tmp_path, monkeypatch):
    from embg.cli.validate import main as validate_main

    tflite, onnx = tiny_bundle(*STAND_IN_TFLITE), tiny_bundle("onnx", 32)
    # the first inference job of each worker waits until two workers are inside one: run one by one, it fails
    monkeypatch.setenv("EMBG_FAKE_AIHUB_BARRIER", "2")
    monkeypatch.setenv("EMBG_FAKE_AIHUB_REFUSE_COMPILE", "npu")
    plan = tmp_path / "devices.toml"
    plan.write_text(f"""quick = true
latency_repeats = 2
[[devices]]
name = "s25-cpu"
device = "aihub:{PHONE}"
bundles = ["{tflite}"]
[[devices]]
name = "s24-gpu"
device = "aihub:{OTHER_PHONE}"
compute_unit = "gpu"
bundles = ["{tflite}"]
[[devices]]
name = "s25-npu"
device = "aihub:{PHONE}"
compute_unit = "npu"
target_runtime = "qnn"
bundles = ["{onnx}"]
""", encoding="utf-8")
    code, out, err = run_cli(validate_main, ["--devices", plan, "--report", tmp_path / "report"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 1, out + err  # one row failed; the report is still written
    rows = {e["device"]: e for e in report["bundles"]}
    assert rows["s25-cpu"]["status"] == rows["s24-gpu"]["status"] == "ok"
    assert rows["s25-cpu"]["passed"] and rows["s24-gpu"]["passed"]
    assert rows["s25-npu"]["status"] == "failed" and "not supported by the NPU backend" in rows["s25-npu"]["error"]
    assert report["partial"] is True
    assert all(d["real_device"] is False and d["stand_in"] is True for d in report["devices"])
    assert {d["name"]: d["compute_unit"] for d in report["devices"]} == {"s25-cpu": "cpu", "s24-gpu": "gpu",
                                                                          "s25-npu": "npu"}
    assert sum(line.startswith("**") and "NO DEVICE USED" in line for line in out.splitlines()) == 3
    jobs = [j for j in _jobs(farm) if j["op"] == "inference"]
    assert {j["device"] for j in jobs} == {PHONE, OTHER_PHONE} and len({j["thread"] for j in jobs}) == 2


# -- the stand-in rule -------------------------------------------------------------------------------

def test_only_the_installed_qai_hub_counts_as_the_farm(monkeypatch, tmp_path):
    from importlib import metadata

    from embg.devices import aihub

    client = types.ModuleType("qai_hub")
    client.__file__ = str(tmp_path / "site-packages" / "qai_hub" / "__init__.py")
    monkeypatch.setattr(metadata, "distribution", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError()))
    assert aihub.is_stand_in(client) is True  # qai-hub is not installed: whatever this is, it is not the client

    class Installed:
        @staticmethod
        def locate_file(relative):
            return tmp_path / "site-packages" / relative

    monkeypatch.setattr(metadata, "distribution", lambda name: Installed())
    assert aihub.is_stand_in(client) is False
    elsewhere = types.ModuleType("qai_hub")
    elsewhere.__file__ = str(FAKES / "qai_hub" / "__init__.py")
    assert aihub.is_stand_in(elsewhere) is True  # a module on the path that is not the installed distribution
    client.EMBG_STAND_IN = True
    assert aihub.is_stand_in(client) is True  # a module that says it is a stand-in is one
    assert aihub.no_device_fields(True)["note"].startswith("NO DEVICE USED")
