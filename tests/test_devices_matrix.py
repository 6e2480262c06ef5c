"""Device runs and the device matrix on tiny bundles (fast): --device, devices.toml, combined report,
history, a failing device giving a partial report + exit 1, ssh argument handling."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import named_copy, run_cli

from embg.cli.validate import main
from embg.errors import EmbgError



def run_main(args: list) -> tuple[int, str, str]:
    return run_cli(main, args)


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    # Shared exports, copied under the names the combination labels are checked against.
    root = tmp_path_factory.mktemp("device-bundles")
    return {"onnx32": named_copy(tiny_bundle("onnx", 32), root / "onnx32"),
            "tflite32": named_copy(tiny_bundle("tflite", 32, (32,)), root / "tflite32")}


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def quick_args(tiny_dir) -> list:
    return ["--model", tiny_dir, "--quick", "--latency-repeats", 1, "--no-memory"]


# ---------------------------------------------------------------- devices.toml parsing (no runs)

def test_toml_plan_rows_paths_and_options(bundles, tmp_path):
    from embg.validate.matrix import load_plan

    rel = Path("../" * len(tmp_path.parts)) / bundles["onnx32"].resolve().relative_to("/")
    toml = write_toml(tmp_path / "devices.toml", f"""
bundles = [{json.dumps(str(bundles['onnx32']))}]
quick = true
[[devices]]
device = "local"
[[devices]]
name = "pi"
device = "ssh:pi@raspberrypi.local:2222"
bundles = [{json.dumps(str(rel))}]
identity = "~/.ssh/id_ed25519"
latency_repeats = 3
""")
    plan = load_plan(toml)
    assert [r.name for r in plan.rows] == ["local", "pi"]
    assert plan.rows[0].bundles == [bundles["onnx32"]]
    assert plan.rows[1].bundles[0].resolve() == bundles["onnx32"].resolve()  # relative to the toml file
    assert plan.rows[1].latency_repeats == 3
    assert plan.rows[1].options == {"identity": str(Path.home() / ".ssh/id_ed25519")}
    assert plan.settings["quick"] is True
    assert len(plan.bundles) == 1  # the same bundle twice is prepared once


@pytest.mark.parametrize("text, message", [
    ("[[devices]]\ndevice = 'local'\nbundles = ['x']\nfoo = [", "not valid TOML"),
    ("colour = 1\n[[devices]]\ndevice = 'local'", "unknown key"),
    ("bundles = ['x']", "no [[devices]]"),
    ("bundles = ['x']\n[[devices]]\nname = 'a'", "needs device"),
    ("bundles = ['x']\n[[devices]]\ndevice = 'toaster'", "unknown device 'toaster'"),
    ("bundles = ['x']\n[[devices]]\ndevice = 'ssh:nohost'", "USER@HOST"),
    ("bundles = ['x']\n[[devices]]\ndevice = 'qemu-arm64:pentium'", "unknown CPU model"),
    ("bundles = ['x']\n[[devices]]\ndevice = 'local'\n[[devices]]\ndevice = 'local'", "names repeat"),
    ("[[devices]]\ndevice = 'local'", "has no bundles"),
])
def test_toml_bad_input_is_a_clear_error(tmp_path, text, message):
    from embg.validate.matrix import load_plan

    with pytest.raises(EmbgError, match=re.escape(message)):
        load_plan(write_toml(tmp_path / "d.toml", text))  # message is a literal, not a regex


def test_bad_device_is_exit_2_before_any_work(bundles, tiny_dir, tmp_path):
    for device in ("toaster", "ssh:", "ssh:-oProxyCommand=x@host", "qemu-arm64:nope"):
        code, out, err = run_main([bundles["onnx32"], "--device", device, *quick_args(tiny_dir),
                                   "--report", tmp_path / "r"])
        assert code == 2, (device, err)
        assert "embg-validate: error:" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run_main(["--devices", tmp_path / "missing.toml", "--report", tmp_path / "r"])
    assert code == 2 and "devices file not found" in err


# ---------------------------------------------------------------- ssh argument handling (no network)

def test_ssh_defaults_are_strict_and_every_remote_part_is_quoted(monkeypatch):
    from embg.devices.ssh import SSHDevice, q

    for name in ("EMBG_SSH_INSECURE_HOST_KEY", "EMBG_SSH_IDENTITY", "EMBG_SSH_KNOWN_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    device = SSHDevice("pi@raspberrypi.local:2222")
    argv = device.ssh_argv("true")
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[-2:] == ["pi@raspberrypi.local", "true"]
    device.configure({"insecure_host_key": True})
    assert "StrictHostKeyChecking=accept-new" in device.ssh_argv("true")
    hostile = "dir with space/$(touch pwned);`id`'\""
    assert shlex.split(q("tar", "xf", "-", "-C", hostile)) == ["tar", "xf", "-", "-C", hostile]
    with pytest.raises(EmbgError):
        SSHDevice("-oProxyCommand=evil@host")


# ---------------------------------------------------------------- runs with real runner processes

def test_device_local_reports_the_runner(bundles, tiny_dir, tmp_path):
    code, out, err = run_main([bundles["onnx32"], "--device", "local", *quick_args(tiny_dir),
                               "--report", tmp_path / "r"])
    assert code == 0, out + err
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["passed"] and not data["partial"] and data["texts"]["source"] == "builtin-quick"
    device = data["devices"][0]
    assert device["name"] == "local" and device["kind"] == "local" and device["emulated"] is False
    assert device["machine"] and device["engines"][0]["engine"] == "onnxruntime"
    assert device["engines"][0]["version"]  # from the runner's hello, not from this process
    entry = data["bundles"][0]
    assert entry["status"] == "ok" and entry["combination"] == "local/onnxruntime/onnx32"
    assert entry["metrics"]["drift"]["cosine_min"] >= 0.9999
    assert len(entry["metrics"]["latency"]["buckets"]) == 2  # --quick: the two smallest buckets


@pytest.fixture(scope="module")
def matrix_run(bundles, tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    names = list(bundles)
    toml = write_toml(root / "devices.toml", f"""
bundles = {json.dumps([str(bundles[n]) for n in names])}
quick = true
latency_repeats = 1
[[devices]]
name = "host-a"
device = "local"
[[devices]]
name = "host-b"
device = "local"
bundles = [{json.dumps(str(bundles['onnx32']))}]
""")
    results = []
    for run in range(2):  # two runs into one history: the second shows a trend over both
        code, out, err = run_main(["--devices", toml, "--model", tiny_dir, "--no-memory", "--report",
                                   root / f"report{run}", "--history", root / "history"])
        results.append((code, out, err, root / f"report{run}"))
    return names, results, root


def test_matrix_has_one_row_per_combination(matrix_run):
    names, results, _ = matrix_run
    code, out, err, report = results[0]
    assert code == 0, out + err
    data = json.loads((report / "report.json").read_text())
    combos = [e["combination"] for e in data["bundles"]]
    engines = {"onnx32": "onnxruntime", "tflite32": "litert"}
    assert combos == [f"host-a/{engines[n]}/{n}" for n in names] + ["host-b/onnxruntime/onnx32"]
    assert all(e["status"] == "ok" and e["passed"] for e in data["bundles"])
    assert [d["name"] for d in data["devices"]] == ["host-a", "host-b"]
    assert data["matrix"]["rows"] == len(combos) and data["status"] == {c: "ok" for c in combos}
    summary = (report / "summary.md").read_text()
    assert all(f"| {d} | {n} |" in summary for d, n in [("host-a", names[0]), ("host-b", "onnx32")])


def test_matrix_html_has_the_plots_and_history(matrix_run):
    names, results, root = matrix_run
    html = (results[1][3] / "report.html").read_text()
    rows = len(names) + 1
    for element_id in ["plot-latency", "plot-size-drift", "plot-trend-cos", "plot-trend-p50",
                       *[f"plot-cosine-hist-{i}" for i in range(rows)]]:
        start = html.index(f'id="{element_id}"')
        assert "<svg" in html[start:start + 400], element_id
    assert "id='devices'" in html and "id='combinations'" in html and "id='history'" in html
    runs = sorted((root / "history").glob("*/report.json"))
    assert len(runs) == 2
    second = json.loads(results[1][3].joinpath("report.json").read_text())
    assert len(second["history"]["runs"]) == 2
    assert all(len(points) == 2 and points[0]["cos_min"] is not None
               for points in second["history"]["trend"].values())
    assert second["baseline"]["path"] == str(runs[0])  # the history's last run became the baseline
    assert any(c["source"] == "baseline" for e in second["bundles"] for c in e["checks"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failing_device_gives_partial_report_and_exit_1(bundles, tiny_dir, tmp_path, monkeypatch):
    # a real failure, no stand-in: an emulated system that was never set up
    monkeypatch.setenv("EMBG_QEMU_DIR", str(tmp_path / "no-qemu-here"))
    rows = [("local", "local"), ("arm", "qemu-arm64:cortex-a72")]
    if shutil.which("ssh"):  # and an ssh host that refuses the connection (nothing listens there)
        rows.append(("gone", f"ssh:nobody@127.0.0.1:{_closed_port()}"))
    toml = write_toml(tmp_path / "devices.toml", f"bundles = [{json.dumps(str(bundles['onnx32']))}]\n" + "".join(
        f"[[devices]]\nname = '{n}'\ndevice = '{d}'\n" for n, d in rows))
    code, out, err = run_main(["--devices", toml, *quick_args(tiny_dir), "--report", tmp_path / "r"])
    assert code == 1, out + err
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["partial"] and not data["passed"]
    status = data["status"]
    assert status["local/onnxruntime/onnx32"] == "ok"
    assert status["arm/onnxruntime/onnx32"].startswith("failed:") and "embg-device-setup qemu-arm64" in \
        status["arm/onnxruntime/onnx32"]
    if len(rows) == 3:
        assert "ssh failed" in status["gone/onnxruntime/onnx32"] and "refused" in status["gone/onnxruntime/onnx32"]
    assert "PARTIAL" in (tmp_path / "r" / "summary.md").read_text()
    assert "DEVICE FAILED" in (tmp_path / "r" / "report.html").read_text()
    assert "PARTIAL report" in err


def test_load_devices_registers_every_kind():
    from embg.devices import DEVICES, load_devices

    load_devices()
    assert {"local", "ssh", "qemu-arm64"} <= set(DEVICES.names())
    # the CLI takes whatever kind is registered; a missing optional runner is simply absent
    assert DEVICES.get("ssh").kind == "ssh" and DEVICES.get("qemu-arm64").kind == "qemu-arm64"
