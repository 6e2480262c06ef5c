"""The adb device runner against a stand-in `adb` (tests/fakes/adb): no phone is involved, and
the runner must say so in everything it returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embg.cli import adb_parity
from embg.cli.adb_parity import host_embeddings, items_from_texts
from embg.devices.adb import protocol
from embg.devices.adb.client import AdbRunner
from embg.devices.adb.protocol import AdbError, DeviceInfo
from embg.parity.path import cosine_rows
from embg.textdata.sets import builtin_texts
from tests.conftest import STAND_IN_TFLITE

FAKES = Path(__file__).resolve().parent / "fakes"
SERIAL = "emulator-5554"


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle(*STAND_IN_TFLITE)


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    root = tmp_path / "fake-device"
    monkeypatch.setenv("EMBG_FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{FAKES}:{__import__('os').environ['PATH']}")
    return root


def _calls(root: Path) -> list[list[str]]:
    return [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]


def _items(bundle):
    rows = builtin_texts()
    picked = [rows[0], rows[2], next(r for r in rows if r.kind == "long"), next(r for r in rows if r.kind == "edge")]
    return items_from_texts(bundle, picked)


def test_parity_round_trip_is_labelled_stand_in(bundle, fake_adb):
    items = _items(bundle)
    # a space in the remote dir: only survives the remote shell if every argument is quoted
    runner = AdbRunner(SERIAL, remote_dir="/data/local/tmp/embg test dir")
    result = runner.run_parity(bundle, items, accelerator="gpu", repeats=2)

    host = host_embeddings(bundle, items)
    cos = cosine_rows(result.embeddings, host)
    assert result.embeddings.shape == host.shape and cos.min() > 0.99999
    assert set(result.buckets) == {64, 256}  # short texts in the small bucket, the long one truncated to 256
    assert result.token_counts == [len(it["ids"]) for it in items]
    assert all(len(t) == 2 for t in result.timings_ms)

    assert result.device_used is False
    assert result.device.stand_in and result.device.model == "embg-stand-in"
    assert result.summary().splitlines()[0].startswith("NO DEVICE USED")
    meta = result.metadata()
    assert meta["device_used"] is False and "no device was used" in meta["note"]
    assert result.accelerator == {"requested": "gpu", "used": "cpu", "note": "stand-in runs on the host CPU only"}
    assert "tokenizer not checked" in result.summary()

    calls = _calls(fake_adb)
    assert calls and all(c[:2] == ["-s", SERIAL] for c in calls)
    pushed = {Path(c[4]).name for c in calls if c[2] == "push"}
    assert {"manifest.json", "tokenizer.json", "input.json"} <= pushed
    assert any(name.endswith(".tflite") for name in pushed)
    device_bundle = fake_adb / "device" / "data/local/tmp/embg test dir/bundle"
    assert (device_bundle / "manifest.json").is_file()


def test_stand_in_is_detected_from_either_side():
    response = {"schema": 1, "runner": "android-app", "device": {"model": "Pixel 8"}, "accelerator": {},
                "results": [{"name": "a", "bucket": 64, "token_count": 3, "embedding": [0.6, 0.8], "ms": [1.0]}]}
    phone = DeviceInfo("X", "Pixel 8", "Google", "35", "arm64-v8a", stand_in=False)
    assert protocol.parse_result(response, [{"name": "a"}], phone).device_used is True
    flagged = {**response, "device": {"model": "Pixel 8", "stand_in": True}}
    assert protocol.parse_result(flagged, [{"name": "a"}], phone).device_used is False
    stand_in = DeviceInfo("X", "embg-stand-in", "embg", "0", "host", stand_in=True)
    assert protocol.parse_result(response, [{"name": "a"}], stand_in).device_used is False


@pytest.mark.parametrize("change, message", [
    ({"schema": 2}, "schema"),
    ({"error": "model failed to compile"}, "model failed to compile"),
    ({"results": []}, "0 results for 1 texts"),
])
def test_bad_responses_are_errors(change, message):
    response = {"schema": 1, "runner": "android-app", "device": {}, "accelerator": {},
                "results": [{"name": "a", "bucket": 64, "token_count": 3, "embedding": [0.6, 0.8], "ms": [1.0]}]}
    phone = DeviceInfo(None, "Pixel 8", "Google", "35", "arm64-v8a", stand_in=False)
    with pytest.raises(AdbError, match=message):
        protocol.parse_result({**response, **change}, [{"name": "a"}], phone)
    nan = {**response, "results": [{**response["results"][0], "embedding": [None, 0.8]}]}
    with pytest.raises(AdbError, match="non-finite"):
        protocol.parse_result(nan, [{"name": "a"}], phone)


def test_app_not_installed_is_a_clear_error(bundle, fake_adb):
    runner = AdbRunner(package="com.example.missing")
    with pytest.raises(AdbError, match="is android_demo installed"):
        runner.run_parity(bundle, _items(bundle)[:1])


def test_missing_adb_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AdbError, match="not found on PATH"):
        AdbRunner()


def test_cli_compares_with_host_and_says_no_device(bundle, fake_adb, tmp_path, capsys):
    out = tmp_path / "adb.json"
    assert adb_parity.main([str(bundle), "--serial", SERIAL, "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("NO DEVICE USED")
    assert "cosine vs host LiteRT: min 1.0000" in printed or "min 0.99999" in printed
    report = json.loads(out.read_text())
    assert report["device_used"] is False and report["texts"] == len(builtin_texts())


# -- embg-validate --device adb[:SERIAL] ------------------------------------------------------------

def _validate_on_adb(bundle, tmp_path, device: str = f"adb:{SERIAL}"):
    from embg.cli.validate import main as validate_main
    from tests.conftest import run_cli

    report_dir = tmp_path / "report"
    code, out, err = run_cli(validate_main, [bundle, "--device", device, "--quick", "--latency-repeats", 2,
                                             "--report", report_dir])
    return code, out, err, json.loads((report_dir / "report.json").read_text())


def test_validate_on_adb_device_says_no_device_was_used(bundle, fake_adb, tmp_path):
    code, out, err, report = _validate_on_adb(bundle, tmp_path)
    assert code == 0, out + err
    assert f"adb:{SERIAL}: NO DEVICE USED" in out  # in the printed summary, not only in the JSON
    (device,) = report["devices"]
    assert device["kind"] == "adb" and device["real_device"] is False and device["stand_in"] is True
    assert device["accelerator"]["used"] == "cpu"
    (entry,) = report["bundles"]
    assert entry["metrics"]["drift"]["cosine_min"] > 0.999  # host LiteRT behind the stand-in vs sentence-transformers
    buckets = entry["metrics"]["latency"]["buckets"]
    assert buckets and all(b["clock"] == "device" for b in buckets.values())
    calls = _calls(fake_adb)
    instruments = [c for c in calls if c[2] == "shell" and "am instrument" in c[3]]
    assert instruments and all(c[:2] == ["-s", SERIAL] for c in calls)
    assert sum(c[2] == "push" and c[4].endswith(".tflite") for c in calls) == 1  # the bundle is pushed once


def test_adb_getprop_cannot_turn_a_stand_in_into_a_device(bundle, fake_adb, tmp_path, monkeypatch):
    # getprop claims a phone, but the app run says it is a stand-in: the report must believe the latter
    monkeypatch.setenv("EMBG_FAKE_ADB_MODEL", "Pixel 8")
    code, out, err, report = _validate_on_adb(bundle, tmp_path, device="adb")
    assert code == 0, out + err
    (device,) = report["devices"]
    assert device["real_device"] is False and "NO DEVICE USED" in device["note"]
    assert "adb: NO DEVICE USED" in out


def test_adb_device_refuses_onnx_bundles_and_bad_serials(tiny_bundle, fake_adb, tmp_path):
    from embg.cli.validate import main as validate_main
    from embg.devices import load_devices, parse_device
    from embg.errors import EmbgError
    from tests.conftest import run_cli

    load_devices()
    with pytest.raises(EmbgError, match="adb:SERIAL"):
        parse_device("adb:-s x")
    code, out, err = run_cli(validate_main, [tiny_bundle("onnx", 32), "--device", "adb", "--quick",
                                             "--report", tmp_path / "r"])
    assert code != 0 and "adb runs TFLite bundles" in out + err
