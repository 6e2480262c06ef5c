"""Turn ``--model`` into a local checkpoint directory: a built-in fixture, a local directory,
or a Hugging Face id fetched through huggingface_hub (its cache, HF_TOKEN, HF_HUB_OFFLINE).

The token is passed to huggingface_hub and never printed or logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embg.errors import CheckpointError

DEFAULT_MODEL = "google/embeddinggemma-300m"
# Only what the exporter reads: safetensors, JSON configs and tokenizer files; never pickles.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*/config.json", "*/*.safetensors"]


@dataclass(frozen=True)
class ResolvedModel:
    directory: Path
    model_id: str
    revision: str | None


def fixture_cache_dir() -> Path:
    from embg.cache_dir import cache_root

    return cache_root() / "fixtures"


def _resolve_fixture(name: str) -> ResolvedModel:
    from embg import fixtures

    directory = fixtures.ensure_fixture(name, fixture_cache_dir())
    return ResolvedModel(directory, f"embg-fixture:{name}", fixtures.FIXTURE_VERSION)


def _resolve_hub(repo_id: str, revision: str | None, token: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, token=token or None,
                                 allow_patterns=HUB_PATTERNS, local_files_only=offline)
    except hub_errors.GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on the model page, then log in with `hf auth login` "
            "or set HF_TOKEN; or pass a local directory with --model"
        ) from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"{repo_id} was not found on the Hugging Face hub (or needs a token you have not given); "
            "check the id, or pass a local directory with --model"
        ) from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise CheckpointError(f"revision {revision!r} of {repo_id} does not exist") from exc
    except (hub_errors.LocalEntryNotFoundError, OSError) as exc:
        where = "is not in the local Hugging Face cache" if offline else "could not be downloaded and is not cached"
        raise CheckpointError(
            f"{repo_id} {where}; connect to the hub once (and accept the licence), "
            "or pass a local directory with --model PATH"
        ) from exc
    directory = Path(path)
    # snapshot_download returns .../snapshots/<commit>: record the commit, not a movable branch
    # name such as "main", so the manifest pins exactly what was exported.
    return ResolvedModel(directory, repo_id, directory.name)


def resolve_model(model: str, revision: str | None = None, token: str | None = None) -> ResolvedModel:
    """Locate ``model`` on disk, downloading it if it is a hub id that is not cached yet."""
    from embg import fixtures

    if model in fixtures.FIXTURE_KINDS:
        return _resolve_fixture(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return ResolvedModel(path.resolve(), str(path.resolve()), revision)
    if path.exists():
        raise CheckpointError(f"--model {model} is a file; pass a checkpoint directory or a hub id")
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise CheckpointError(
            f"--model {model}: no such directory, and not a hub id of the form org/name "
            f"(built-in fixtures: {', '.join(fixtures.FIXTURE_KINDS)})"
        )
    return _resolve_hub(model, revision, token or os.environ.get("HF_TOKEN"))
