#!/usr/bin/env python3
"""Self-contained embedding runner for devices: no embg import, only numpy and one runtime package.

Protocol (one JSON object per line on stdin, one per line on stdout):
  -> {"op": "hello"}                          <- {"ok": true, "engine": ..., "version": ..., "machine": ...}
  -> {"op": "embed", "signature": "seq64"|null, "shape": [B, S], "ids": "<b64 int32>", "mask": "<b64 int32>"}
  <- {"ok": true, "shape": [B, D], "embeddings": "<b64 float32>", "seconds": t}
  -> {"op": "quit"}
Errors come back as {"ok": false, "error": "..."}; the process keeps serving.
Usage: remote_runner.py BUNDLE_DIR ENGINE(onnxruntime|litert) [THREADS]
"""

import base64
import json
import os
import platform
import sys
import time

import numpy as np


def _onnxruntime(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def embed(signature, ids, mask):
        return session.run(["sentence_embedding"], {"input_ids": ids.astype(np.int64),
                                                    "attention_mask": mask.astype(np.int64)})[0]

    return embed, "onnxruntime", ort.__version__


def _litert(path, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter

        package = "ai-edge-litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter

        package = "tflite-runtime"
    interpreter = Interpreter(model_path=path, num_threads=threads or None)
    runners = {}

    def embed(signature, ids, mask):
        if signature not in runners:
            runners[signature] = interpreter.get_signature_runner(signature)
        rows = [runners[signature](input_ids=ids[i:i + 1].astype(np.int32),
                                   attention_mask=mask[i:i + 1].astype(np.int32))["sentence_embedding"]
                for i in range(len(ids))]
        return np.concatenate(rows)

    try:
        from importlib import metadata

        version = metadata.version(package)
    except Exception:  # noqa: BLE001 - version is informative only
        version = "unknown"
    return embed, package, version


ENGINES = {"onnxruntime": _onnxruntime, "litert": _litert}


def _decode(text, shape, dtype):
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape)


def main(argv):
    bundle, engine = argv[1], argv[2]
    threads = int(argv[3]) if len(argv) > 3 and argv[3] else None
    manifest = json.load(open(os.path.join(bundle, "manifest.json"), encoding="utf-8"))
    embed, package, version = ENGINES[engine](os.path.join(bundle, manifest["model_file"]), threads)
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request["op"] == "quit":
                break
            if request["op"] == "hello":
                reply = {"ok": True, "engine": package, "version": version, "machine": platform.machine(),
                         "platform": platform.platform(), "python": platform.python_version()}
            else:
                shape = request["shape"]
                ids = _decode(request["ids"], shape, np.int32)
                mask = _decode(request["mask"], shape, np.int32)
                start = time.perf_counter()
                result = np.ascontiguousarray(embed(request.get("signature"), ids, mask), dtype=np.float32)
                reply = {"ok": True, "shape": list(result.shape), "seconds": time.perf_counter() - start,
                         "embeddings": base64.b64encode(result.tobytes()).decode("ascii")}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the host as data
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
