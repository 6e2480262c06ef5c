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
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("transformers", "sentence_transformers", "torch", "absl", "onnxscript", "onnx_ir", "jax",
                 "litert_torch", "ai_edge_quantizer", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def setup_logging(verbose: bool) -> None:
    if verbose:
        os.environ["EMBG_VERBOSE"] = "1"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not verbose:
        quiet_third_party()


def run_cli(prog: str, body: Callable[[], int]) -> int:
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
