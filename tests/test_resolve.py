"""--model as a Hugging Face id, resolved offline from a cache laid out exactly as huggingface_hub
writes it (refs/<branch> -> snapshots/<commit>/<file> -> ../../blobs/<hash>)."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from embg.fixtures import FIXTURE_KINDS
from tests.test_loading import assert_refused

COMMIT = "3f2c1b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"
REPO = "acme/tiny-embed"
SECRET = "hf_secretXYZ"


def build_hub_cache(root: Path, source: Path, repo_id: str = REPO, commit: str = COMMIT) -> Path:
    """A huggingface_hub cache holding ``source`` as ``repo_id`` at ``commit`` on branch main."""
    org, name = repo_id.split("/")
    repo = root / f"models--{org}--{name}"
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)  # huggingface_hub writes the hash without a newline
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_dir) -> Path:
    """An offline hub cache with the tiny fixture as acme/tiny-embed; returns its snapshot directory."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    snapshot = build_hub_cache(cache, tiny_dir)
    # huggingface_hub reads these once at import time, so patch its constants as well as the env.
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_hub_id_resolves_from_offline_cache(hub):
    from embg.checkpoint.resolve import resolve_model

    resolved = resolve_model(REPO)
    assert resolved.directory.resolve() == hub.resolve()
    assert resolved.model_id == REPO
    assert resolved.revision == COMMIT


@pytest.mark.parametrize("revision", [None, "main", COMMIT])
def test_load_model_records_snapshot_commit(hub, revision):
    """Whatever names the revision, the manifest must pin the exact commit that was exported."""
    from embg.checkpoint.load import load_model

    model = load_model(REPO, revision=revision)
    assert model.spec.model_id == REPO
    assert model.spec.revision == COMMIT
    assert model.spec.output_dim == FIXTURE_KINDS["tiny"].head[1]
    assert model.tokenizer.prompt_text("query") == "task: search result | query: "


def test_unknown_branch_offline_is_refused(hub):
    from embg.errors import CheckpointError
    from embg.checkpoint.resolve import resolve_model

    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        resolve_model(REPO, revision="v2")


def test_missing_repo_offline_is_clear(hub, tmp_path, capsys):
    from embg.errors import CheckpointError
    from embg.checkpoint.resolve import resolve_model

    with pytest.raises(CheckpointError) as info:
        resolve_model("acme/absent")
    message = str(info.value)
    assert "acme/absent" in message and "not in the local Hugging Face cache" in message
    assert "pass a local directory" in message
    assert_refused(["--model", "acme/absent", "--target", "onnx", "--bits", "8"], tmp_path / "work" / "out",
                   capsys, "acme/absent", "not in the local Hugging Face cache", "local directory")


def test_not_a_hub_id_is_clear():
    from embg.errors import CheckpointError
    from embg.checkpoint.resolve import resolve_model

    with pytest.raises(CheckpointError, match="no such directory, and not a hub id"):
        resolve_model("./no/such/dir")
    with pytest.raises(CheckpointError, match="built-in fixtures: tiny"):
        resolve_model("a/b/c")


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub does for a gated repo without an accepted licence."""

    seen_tokens: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server API
        self.seen_tokens.append(self.headers.get("authorization", ""))
        body = b'{"error": "Access to model acme/gated is restricted."}'
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model acme/gated is restricted.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):  # keep the test output clean
        pass


def test_gated_repo_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from embg.errors import CheckpointError
    from embg.checkpoint.resolve import resolve_model

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        _GatedHub.seen_tokens.clear()
        with pytest.raises(CheckpointError) as info:
            resolve_model("acme/gated", token=SECRET)
    finally:
        server.shutdown()
        server.server_close()
    message = str(info.value)
    assert "gated" in message and "accept its licence" in message and "HF_TOKEN" in message
    assert "local directory" in message
    assert SECRET not in message
    # The token did reach the hub (that is what it is for), just never our output.
    assert any(SECRET in t for t in _GatedHub.seen_tokens)


@pytest.mark.parametrize("offline", ["1", "0"])
def test_token_never_printed(tmp_path, offline):
    """HF_TOKEN must not leak into stdout/stderr, even with --verbose (DEBUG logging on)."""
    env = dict(os.environ, HF_TOKEN=SECRET, HF_HUB_OFFLINE=offline, HF_HUB_CACHE=str(tmp_path / "hub"),
               # Online attempts go to a closed local port: refused at once, no real network.
               HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "embg.cli.export", "--model", "acme/absent", "--target", "onnx", "--bits", "8",
         "--out", str(out), "--verbose"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 2, proc.stderr
    assert "acme/absent" in proc.stderr.strip().splitlines()[-1]
    expected = "not in the local Hugging Face cache" if offline == "1" else "could not be downloaded"
    assert expected in proc.stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert not out.exists()


def test_copy_of_cache_without_blobs_resolves(tmp_path, monkeypatch, tiny_dir):
    """Snapshots holding real files (a cache copied with symlinks dereferenced) work too."""
    import huggingface_hub.constants as constants

    from embg.checkpoint.resolve import resolve_model

    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--copied" / "snapshots" / COMMIT
    shutil.copytree(tiny_dir, snapshot)
    (cache / "models--acme--copied" / "refs").mkdir()
    (cache / "models--acme--copied" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_model("acme/copied")
    assert resolved.directory.resolve() == snapshot.resolve() and resolved.revision == COMMIT
