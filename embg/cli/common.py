"""What every CLI shares: logging set-up and turning user errors into one line + exit 2."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from embg.errors import EmbgError


def quiet_third_party() -> None:
    """Converters print pages of warnings; users need ours. --verbose turns them back on."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("transformers", "sentence_transformers", "torch", "absl", "onnxscript", "onnx_ir", "jax",
                 "litert_torch", "ai_edge_quantizer", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # the "Loading weights" bars of every reference load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def setup_logging(verbose: bool) -> None:
    if verbose:
        os.environ["EMBG_VERBOSE"] = "1"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EmbgPrefix())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        quiet_third_party()


class _EmbgPrefix(logging.Formatter):
    """embg's own log lines read like its progress lines ("[embg] ..."); third-party lines (--verbose) do not."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return f"[embg] {message}" if record.name.split(".")[0] == "embg" else message


def run_cli(prog: str, body: Callable[[], int]) -> int:
    from embg.quiet import silence_native_teardown

    silence_native_teardown()  # LiteRT logs again at interpreter exit, after our result
    try:
        return body()
    except EmbgError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def step(message: str) -> None:
    """Progress for long steps, on stderr so stdout stays machine-readable."""
    print(f"[embg] {message}", file=sys.stderr, flush=True)
