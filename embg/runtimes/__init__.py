"""Runtimes: one per engine. Each takes token ids + mask and returns float32 embeddings."""

from embg.runtimes.base import RUNTIMES, Runtime, load_runtime


def load_all() -> None:
    """Import every runtime module so the registry is complete (engines import lazily inside)."""
    from embg.runtimes import onnxruntime_rt  # noqa: F401

    try:
        from embg.runtimes import litert_rt  # noqa: F401
    except ImportError:  # pragma: no cover - the tflite extra is not installed
        pass


__all__ = ["RUNTIMES", "Runtime", "load_all", "load_runtime"]
