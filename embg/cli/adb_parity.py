"""Android parity on its own: run a bundle in android_demo on a phone or emulator over adb and compare
each text's embedding with host LiteRT on the same token ids (tokenized on the host with the bundle's
own tokenizer files). ``embg-validate --device adb[:SERIAL]`` is the full validator on the same device.

    python -m embg.cli.adb_parity BUNDLE_DIR [--serial SERIAL] [--accelerator cpu|gpu|npu] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from embg.devices.adb.client import AdbRunner
from embg.devices.adb.protocol import ACCELERATORS, REMOTE_DIR
from embg.errors import EmbgError
from embg.parity.path import finite_cosine
from embg.textdata.sets import builtin_texts


def items_from_texts(bundle: Path, texts: list[Any]) -> list[dict[str, Any]]:
    """Token ids for EvalText-like rows (``.text``, ``.task``) with the bundle's own tokenizer and prompts."""
    from embg.model.tokenizer import EmbedTokenizer

    manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    largest = max(int(s["seq_len"]) for s in manifest["signatures"])
    tok = EmbedTokenizer(Path(bundle), manifest["prompts"], max_length=largest)
    items = []
    for i, row in enumerate(texts):
        batch = tok.encode([row.text], prompt=row.task or None, max_length=largest)
        n = int(batch.attention_mask[0].sum())
        items.append({"name": f"t{i:03d}", "ids": [int(x) for x in batch.input_ids[0, :n]],
                      "text": row.text, "prompt": row.task})
    return items


def host_embeddings(bundle: Path, items: list[dict[str, Any]]) -> np.ndarray:
    """The same ids through LiteRT on this host: the device result is compared with this."""
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    runtime = load_runtime("litert", Artifact.load(Path(bundle)), threads=1)
    rows = []
    for it in items:
        ids = np.asarray([it["ids"]], dtype=np.int64)
        rows.append(runtime.embed(ids, np.ones_like(ids))[0])
    return np.asarray(rows, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m embg.cli.adb_parity",
                                description="Run a bundle in android_demo on a phone or emulator and compare with host LiteRT.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--serial", help="adb device serial (adb devices); default: the only device")
    p.add_argument("--accelerator", default="cpu", choices=ACCELERATORS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--remote-dir", default=REMOTE_DIR)
    p.add_argument("--min-cosine", type=float, default=0.99)
    p.add_argument("--json", type=Path, help="write metadata and per-text cosines here")
    args = p.parse_args(argv)
    try:
        runner = AdbRunner(args.serial, remote_dir=args.remote_dir)
        items = items_from_texts(args.bundle, builtin_texts())
        result = runner.run_parity(args.bundle, items, args.accelerator, args.repeats)
        host = host_embeddings(args.bundle, items)
    except EmbgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cos = finite_cosine(result.embeddings, host)  # the one NaN rule: a non-finite cosine fails
    print(result.summary())
    print(f"cosine vs host LiteRT: min {cos.min():.6f}, mean {cos.mean():.6f} (threshold {args.min_cosine})")
    if args.json:
        args.json.write_text(json.dumps({**result.metadata(), "cosine": dict(zip(result.names, map(float, cos)))},
                                        indent=2) + "\n", encoding="utf-8")
    return 0 if cos.min() >= args.min_cosine else 1


if __name__ == "__main__":
    raise SystemExit(main())
