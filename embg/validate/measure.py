"""Measuring one bundle in one runtime: its tokenizer files, parity against the (cached) reference in
every mode, retrieval, Matryoshka dims, latency, memory and size. Returns plain figures; gating and
report rows are embg.validate.rows."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from embg.bundle import Artifact
from embg.errors import EmbgError
from embg.parity import metrics
from embg.parity.path import measure_parity, reference_embeddings
from embg.textdata.sets import EvalText
from embg.validate import latency
from embg.validate.inputs import Prepared, ValidateOptions


class ReferenceCache:
    """sentence-transformers embeddings per (truncation length, dim): shared by bundles that agree."""

    def __init__(self, model, threads: int | None) -> None:
        from embg.runtimes.reference import SentenceTransformersReference

        self.model = model
        self.reference = SentenceTransformersReference(model.spec.directory, threads=threads)
        self._cache: dict[tuple[int, int | None], np.ndarray] = {}
        self._lock = threading.Lock()  # matrix runs ask from one thread per device

    def embeddings(self, texts: list[EvalText], max_length: int, dim: int | None) -> np.ndarray:
        with self._lock:
            return self._embeddings(texts, max_length, dim)

    def _embeddings(self, texts: list[EvalText], max_length: int, dim: int | None) -> np.ndarray:
        key = (max_length, dim)
        if key not in self._cache:
            # same truncation as the runtime (for this call only): the reference sees exactly the tokens the
            # bundle sees; prompt_name, as users call sentence-transformers
            self._cache[key] = reference_embeddings(self.reference, self.model.tokenizer, texts, max_length, dim)
        return self._cache[key]


def retrieval_split(texts: list[EvalText], ours: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Retrieval agreement of the text set's queries vs documents; {"k": 0} when one side is empty
    (said explicitly, so the gate can tell "not applicable" from "missing")."""
    q = [i for i, t in enumerate(texts) if t.is_query]
    d = [i for i, t in enumerate(texts) if t.is_document]
    if not q or not d:
        return {"queries": len(q), "documents": len(d), "k": 0}
    return metrics.retrieval(ours[q], ours[d], ref[q], ref[d])


def measure_bundle(artifact: Artifact, runtime_name: str, prepared: Prepared, reference: ReferenceCache,
                   options: ValidateOptions) -> dict[str, Any]:
    from embg.runtimes import load_runtime
    from embg.validate.bundle_tokenizer import compare_token_ids
    from embg.validate.memory import measure_peak_rss

    say = options.progress
    tokenizer = prepared.tokenizer_for(artifact)  # the bundle's own files: what a device tokenizes with
    texts = prepared.texts
    where = f" on {options.device}" if options.device else ""
    say(f"{artifact.directory.name}: checking its tokenizer files against the reference's on {len(texts)} texts")
    tokens = compare_token_ids(artifact, tokenizer, prepared.model.tokenizer, texts)
    say(f"{artifact.directory.name}: loading in {runtime_name}{where}")
    if options.device:
        from embg.devices import open_device

        # cold load includes copying the bundle to the device and starting the runner there
        runtime, load_s = latency.timed(lambda: open_device(options.device, artifact, runtime_name, options.threads,
                                                             options.device_options))
    else:
        runtime, load_s = latency.timed(lambda: load_runtime(runtime_name, artifact, threads=options.threads))
    try:
        max_length = runtime.max_length or tokenizer.max_length
        buckets = latency.plan(artifact.manifest, runtime.max_length)
        if options.quick:
            buckets = buckets[:2]
        prose = tokenizer.encode([t.text for t in texts if t.kind == "long"][:1] or [texts[0].text],
                                 prompt="document" if "document" in tokenizer.prompts else None,
                                 max_length=max(b.seq_len for b in buckets)).input_ids[0]
        first = latency.Bucket(buckets[0].seq_len, buckets[0].batch)
        ids = np.resize(prose, first.seq_len)[None].repeat(first.batch, 0)
        _, first_s = latency.timed(lambda: runtime.embed(ids, np.ones_like(ids)))
        full = artifact.manifest.get("full_dim", artifact.embedding_dim)
        dim = artifact.embedding_dim if artifact.embedding_dim != full else None
        say(f"{artifact.directory.name}: reference embeddings (max length {max_length})")
        ref = reference.embeddings(texts, max_length, dim)
        say(f"{artifact.directory.name}: embedding {len(texts)} texts alone and in padded batches")
        parity = measure_parity(runtime, tokenizer, texts, ref)
        ours, cos = parity.worst_embeddings, parity.per_text_cosine
        matryoshka = {}
        for d in artifact.manifest.get("matryoshka_dims") or [artifact.embedding_dim]:
            o, r = metrics.renormalise(ours, d), metrics.renormalise(ref, d)
            matryoshka[str(d)] = {**metrics.drift(o, r)[0],
                                  "top10_overlap_mean": retrieval_split(texts, o, r).get("top10_overlap_mean")}
        say(f"{artifact.directory.name}: latency over {len(buckets)} bucket(s)")
        timings = latency.measure(runtime.embed, prose, buckets, options.latency_repeats, options.latency_warmup,
                                  say, device_clock=getattr(runtime, "last_call_ms", None))
        version = runtime.version_info()
        reported = getattr(runtime, "device_measurements", dict)()  # a device farm's own profile (aihub)
    finally:
        runtime.close()
    memory: dict[str, Any] = {}
    if reported.get("memory"):
        memory = reported["memory"]
    elif options.device and options.device != "local":
        memory = {"skipped": f"peak RSS is measured on this host only, not on {options.device}"}
    elif not options.memory:
        memory = {"skipped": "--no-memory"}
    else:
        say(f"{artifact.directory.name}: peak RSS in a separate process")
        try:
            memory = measure_peak_rss(artifact.directory, runtime_name, options.threads,
                                      max(b.seq_len for b in buckets))
        except EmbgError as exc:  # a runtime that crashes is a failing bundle, not bad input
            memory = {"error": str(exc)}
    files = artifact.manifest.get("files") or [artifact.manifest["model_file"]]
    size = {"model_file_mb": round(artifact.model_path.stat().st_size / 2**20, 3),
            "bundle_mb": round(sum(p.stat().st_size for p in artifact.directory.iterdir() if p.is_file()) / 2**20, 3),
            "model_files_mb": round(sum((artifact.directory / f).stat().st_size for f in files) / 2**20, 3)}
    return {
        "runtime": version, "cos": cos, "parity": parity, "tokenizer": tokens,
        "metrics": {"drift": {**parity.headline, "worst_mode": parity.worst_mode}, "drift_by_mode": parity.modes,
                    "batch_consistency": parity.consistency, "tokenizer": tokens.to_dict(),
                    "matryoshka": matryoshka, "retrieval": retrieval_split(texts, ours, ref),
                    "latency": {"cold_load_s": round(load_s, 4), "first_embed_s": round(first_s, 4),
                                "buckets": timings, **({"device_load": reported["load"]} if reported.get("load") else {})},
                    "memory": memory, "size": size},
    }
