"""fp16 on a checkpoint: intermediate magnitudes per layer, and parity of the fp16-safe graph in fp16.

    python -m bench.fp16_headroom --model DIR --out DIR [--parts ...]
        [--max-tokens N] [--every K] [--plain-stop N] [--skip-rope16]

Texts: the validator's built-in texts (``embg.textdata.sets.builtin_texts()``), each with its
task prompt, truncated to 2048 tokens (``--max-tokens``; ``--every K`` keeps every K-th text, a
fixed subset for slow hosts); "alone" = one text per call, "batches" = up to 8 texts
with the same task prompt, in input order, padded to the longest. Reference:
sentence-transformers on the checkpoint, each text alone, on the same token ids.

Parts (default: all):

* ``headroom``  max |intermediate| per layer (embg.model.intermediates) of the plain graph and of
                the fp16-safe graph, both in float32, and the fp32 cosine between them (torch);
* ``torch``     torch on CPU in fp16: the plain graph (NaN/inf count) and the fp16-safe graph
                (alone, batches), plus the fp16-safe graph with rope angles in fp16 too (what a GPU
                running a float32 .tflite in fp16 precision computes; ``--skip-rope16`` leaves it out);
                slow on x86: torch's fp16 matmuls run ~30x slower than float32 there (docs/fp16.md);
                ``--plain-stop N`` stops the plain graph after N texts when every one of them is NaN/inf;
* ``onnx``      the ``--bits 16`` ONNX bundle in onnxruntime (CPU), alone and in batches;
* ``fp32``      fp32 bundles of the plain and the fp16-safe graph, ONNX and TFLite: cosine between
                them (the fp32 function must not change) and against sentence-transformers;
* ``tflite16``  the ``--bits 16`` TFLite bundle: parity on LiteRT's CPU and its peak RSS next to fp32;
* ``int8``      the int8 preset with and without fp16_safe, ONNX and TFLite: parity and latency
                (one 256-token input, interleaved, median; noisy on a shared machine).

Writes ``results.json`` and ``tables.md`` into --out; bundles go to --out/bundles (real-model
bundles: never commit them).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

PARTS = ("headroom", "torch", "onnx", "fp32", "tflite16", "int8")
MAX_TOKENS = 2048
TFLITE_BUCKETS = (64, 256, 2048)
Embed = Callable[[np.ndarray, np.ndarray], np.ndarray]


def say(message: str) -> None:
    print(f"[fp16] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def alone_rows(model, texts, max_tokens: int = MAX_TOKENS) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = []
    for text in texts:
        task = text.task if text.task in model.tokenizer.prompts else None
        encoded = model.tokenizer.encode([text.text], prompt=task, max_length=max_tokens)
        rows.append((encoded.input_ids, encoded.attention_mask))
    return rows


def embed_alone(embed: Embed, rows, stop_if_all_nonfinite: int = 0) -> np.ndarray:
    """One row per text; with ``stop_if_all_nonfinite`` = N > 0, stop after N texts if all N are NaN/inf."""
    out: list[np.ndarray] = []
    for ids, mask in rows:
        out.append(np.asarray(embed(ids, mask), dtype=np.float32))
        if len(out) == stop_if_all_nonfinite and all(not np.isfinite(o).all() for o in out):
            say(f"  stopped: the first {len(out)} texts are all NaN/inf")
            break
    return np.concatenate(out)


def embed_batches(embed: Embed, model, texts, batch: int = 8, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Texts in batches of ``batch`` with the same task prompt (padded to the longest), in input order."""
    out: list[np.ndarray | None] = [None] * len(texts)
    for task in dict.fromkeys(t.task for t in texts):
        index = [i for i, t in enumerate(texts) if t.task == task]
        prompt = task if task in model.tokenizer.prompts else None
        for start in range(0, len(index), batch):
            chosen = index[start:start + batch]
            encoded = model.tokenizer.encode([texts[i].text for i in chosen], prompt=prompt, max_length=max_tokens)
            rows = np.asarray(embed(encoded.input_ids, encoded.attention_mask), dtype=np.float32)
            for i, row in zip(chosen, rows):
                out[i] = row
    return np.stack(out)


def compare(ours: np.ndarray, ref: np.ndarray, started: float | None = None) -> dict[str, Any]:
    """Drift of ``ours`` against the first ``len(ours)`` reference rows; with ``started``, the seconds since."""
    from embg.parity.path import drift

    found = drift(ours, ref[:len(ours)])[0]
    if started is not None:
        found["seconds"] = round(time.perf_counter() - started, 1)
    return found


def torch_embed(graph: torch.nn.Module) -> Embed:
    def embed(ids, mask):
        with torch.no_grad():
            return graph(torch.as_tensor(ids), torch.as_tensor(mask)).float().numpy()
    return embed


def runtime_embed(bundle: Path, **options) -> tuple[Embed, Any]:
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    artifact = Artifact.load(bundle)
    runtime = load_runtime(artifact.manifest["runtime"], artifact, threads=1, **options)
    return runtime.embed, runtime


def export(model_dir: str, target: str, recipe, out: Path) -> Path:
    from embg.export.pipeline import ExportRequest, export_bundle

    if (out / "manifest.json").is_file():
        say(f"reusing {out}")
        return out
    say(f"exporting {out.name}")
    seq = TFLITE_BUCKETS if target == "tflite" else ()
    return export_bundle(ExportRequest(model=model_dir, target=target, recipe=recipe, out=out, seq_lens=seq,
                                       parity=False), progress=lambda m: say(f"  {m}"))


def with_fp16_safe(name: str, scale: float):
    from embg.quantize.recipe import load_recipe, parse_recipe

    data = load_recipe(name).to_dict()
    data.update(name=f"{name}-fp16safe", fp16_safe={"residual_scale": scale})
    return parse_recipe(data)


def plain_and_safe(model_dir: str, target: str, preset: str, scale: float, bundles: Path):
    """(label, bundle, embed) for ``preset`` as it is and with fp16_safe added: exported, then loaded."""
    from embg.quantize.recipe import load_recipe

    for label, recipe in ((preset, load_recipe(preset)), (f"{preset}+fp16_safe", with_fp16_safe(preset, scale))):
        bundle = export(model_dir, target, recipe, bundles / f"{target}-{label.replace('+', '-')}")
        embed, _runtime = runtime_embed(bundle)
        yield label, bundle, embed


def rope_in_fp16(graph) -> None:
    """Make ``graph`` (already half) compute rope angles in fp16, as a GPU in fp16 precision would."""
    def rope(positions, layer_type, dtype):
        freqs = positions.half()[:, None] * getattr(graph, f"inv_freq_{layer_type}").half()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, :, None].to(dtype), emb.sin()[None, :, None].to(dtype)  # [1, S, 1, D] as graph._rope
    graph._rope = rope


def layer_table(plain: dict, safe: dict, scale: float) -> str:
    lines = [f"| layer | plain: residual | plain: largest | fp16-safe (x{scale:g}): residual | norm squares | "
             "q/k normed | scores | gate*up | largest |", "|---|" + "---|" * 8]
    for layer in sorted(safe["layers"], key=int):
        p, s = plain["layers"][layer], safe["layers"][layer]
        lines.append(f"| {layer} | {p['residual']:.4g} | {p['layer_max']:.4g} | {s['residual']:.4g} | "
                     f"{s['norm_squares']:.3g} | {s['qk_normed']:.3g} | {s['scores']:.3g} | {s['gate_up']:.3g} | "
                     f"{s['layer_max']:.4g} |")
    for row in ("before_layers", "after_layers", "head"):
        lines.append(f"| {row} | | {plain['outer'][row]:.4g} | | | | | | {safe['outer'][row]:.4g} |")
    lines.append(f"| **all** | | **{plain['overall']:.4g}** | | | | | | **{safe['overall']:.4g}** |")
    return "\n".join(lines)


def latency_ms(embeds: dict[str, Embed], ids: np.ndarray, mask: np.ndarray, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in embeds}
    for name, embed in embeds.items():
        embed(ids, mask)  # warm-up
    for r in range(repeats):
        names = list(embeds)
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            embeds[name](ids, mask)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(values), 1) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real one for quality claims)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--scale", type=float, default=None, help="residual_scale (default: the fp16 preset's)")
    parser.add_argument("--repeats", type=int, default=7, help="latency repetitions (int8 part)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="truncate every text to this many tokens")
    parser.add_argument("--every", type=int, default=1, help="keep every K-th built-in text (1: all)")
    parser.add_argument("--plain-stop", type=int, default=0,
                        help="torch part: stop the plain graph after N texts if all are NaN/inf (0: never)")
    parser.add_argument("--skip-rope16", action="store_true", help="torch part: leave out the rope-in-fp16 variant")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")

    from embg.model.fp16_safe import FP16_LIMIT, make_fp16_safe, to_half
    from embg.model.intermediates import measure
    from embg.checkpoint.load import load_model
    from embg.quantize.recipe import load_recipe
    from embg.runtimes.reference import SentenceTransformersReference
    from embg.textdata.sets import builtin_texts

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    scale = args.scale or load_recipe("fp16").fp16_safe["residual_scale"]
    results.update(model=args.model, residual_scale=scale, limit=FP16_LIMIT)
    model = load_model(args.model)
    texts = builtin_texts()[::args.every]
    rows = alone_rows(model, texts, args.max_tokens)
    results["texts"] = {"count": len(rows), "every": args.every, "max_tokens": args.max_tokens,
                        "tokens_max": int(max(m.sum() for _, m in rows)),
                        "tokens_total": int(sum(m.sum() for _, m in rows))}
    say(f"{len(rows)} texts, longest {results['texts']['tokens_max']} tokens; reference: sentence-transformers alone")
    reference = SentenceTransformersReference(model.spec.directory, threads=1)
    ref = embed_alone(reference.embed, rows)
    del reference

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=1, default=float))

    plain = model.graph()
    safe = model.graph()
    make_fp16_safe(safe, scale)
    if "headroom" in parts:
        say("headroom: plain graph (float32)")
        out_plain: list[torch.Tensor] = []
        found_plain = measure(plain, [(torch.as_tensor(i), torch.as_tensor(m)) for i, m in rows], outputs=out_plain)
        say("headroom: fp16-safe graph (float32)")
        out_safe: list[torch.Tensor] = []
        found_safe = measure(safe, [(torch.as_tensor(i), torch.as_tensor(m)) for i, m in rows], outputs=out_safe)
        a, b = torch.cat(out_plain).numpy(), torch.cat(out_safe).numpy()
        results["headroom"] = {"plain": found_plain.to_dict(), "fp16_safe": found_safe.to_dict(),
                               "fp32_safe_vs_plain": compare(b, a), "fp32_plain_vs_reference": compare(a, ref)}
        save()
    if "torch" in parts:
        say("torch fp16: plain graph")
        plain_half = to_half(copy.deepcopy(plain), require_safe=False)
        started = time.perf_counter()
        results["torch_fp16_plain_alone"] = compare(embed_alone(torch_embed(plain_half), rows, args.plain_stop),
                                                    ref, started)
        save()
        del plain_half
        safe_half = to_half(copy.deepcopy(safe))
        say("torch fp16: fp16-safe graph, alone")
        started = time.perf_counter()
        results["torch_fp16_safe_alone"] = compare(embed_alone(torch_embed(safe_half), rows), ref, started)
        save()
        say("torch fp16: fp16-safe graph, batches")
        started = time.perf_counter()
        results["torch_fp16_safe_batches"] = compare(embed_batches(torch_embed(safe_half), model, texts,
                                                                   max_tokens=args.max_tokens), ref, started)
        save()
        if not args.skip_rope16:
            say("torch fp16: fp16-safe graph with rope angles in fp16, alone")
            rope_in_fp16(safe_half)
            started = time.perf_counter()
            results["torch_fp16_safe_rope16_alone"] = compare(embed_alone(torch_embed(safe_half), rows), ref, started)
        del safe_half
        save()
    bundles = args.out / "bundles"
    if "onnx" in parts:
        bundle = export(args.model, "onnx", load_recipe("fp16"), bundles / "onnx-fp16")
        embed, runtime = runtime_embed(bundle)
        say("onnxruntime fp16: alone, batches")
        started = time.perf_counter()
        alone = compare(embed_alone(embed, rows), ref, started)
        started = time.perf_counter()
        results["onnx_fp16"] = {"alone": alone,
                                "batches": compare(embed_batches(embed, model, texts, max_tokens=args.max_tokens),
                                                   ref, started),
                                "size_mb": round(sum(p.stat().st_size for p in bundle.iterdir()) / 1e6, 1)}
        save()
    if "fp32" in parts:
        found: dict[str, Any] = {}
        for target in ("onnx", "tflite"):
            outs = {}
            for label, _bundle, embed in plain_and_safe(args.model, target, "fp32", scale, bundles):
                say(f"{target} {label}: alone")
                outs[label] = embed_alone(embed, rows)
            plain, safe_out = outs["fp32"], outs["fp32+fp16_safe"]
            found[target] = {"safe_vs_plain": compare(safe_out, plain), "plain_vs_reference": compare(plain, ref),
                             "safe_vs_reference": compare(safe_out, ref)}
        results["fp32_targets"] = found
        save()
    if "tflite16" in parts:
        from embg.validate.memory import measure_peak_rss

        bundle16 = export(args.model, "tflite", load_recipe("fp16"), bundles / "tflite-fp16")
        embed, runtime = runtime_embed(bundle16)
        say("tflite fp16 weights on LiteRT CPU: alone")
        results["tflite_fp16"] = {"alone": compare(embed_alone(embed, rows), ref),
                                  "size_mb": round(sum(p.stat().st_size for p in bundle16.iterdir()) / 1e6, 1)}
        del runtime, embed
        rss = {}
        for label, bundle in (("fp16", bundle16), ("fp32", bundles / "tflite-fp32")):
            if (bundle / "manifest.json").is_file():
                say(f"peak RSS, tflite {label}")
                rss[label] = measure_peak_rss(bundle, "litert", 1, 256)
        results["tflite_fp16"]["peak_rss_256"] = rss
        save()
    if "int8" in parts:
        found = {}
        prose = next(r for t, r in zip(texts, rows) if t.kind == "long")[0]
        ids = prose[0, 1:255]  # 254 real prose tokens with BOS and EOS around them: 256 tokens
        ids = np.concatenate([[model.tokenizer.backend.bos_token_id], ids, [model.tokenizer.backend.eos_token_id]])[None]
        mask = np.ones_like(ids)
        for target in ("onnx", "tflite"):
            embeds = {}
            for label, bundle, embed in plain_and_safe(args.model, target, "int8", scale, bundles):
                say(f"{target} {label}: alone")
                found[f"{target} {label}"] = {"alone": compare(embed_alone(embed, rows), ref),
                                              "activation_precision": json.loads((bundle / "manifest.json")
                                                                                 .read_text())["activation_precision"]}
                embeds[label] = embed
            say(f"{target}: latency, 256 tokens, {args.repeats} interleaved repeats")
            for label, ms in latency_ms(embeds, ids.astype(np.int64), mask.astype(np.int64), args.repeats).items():
                found[f"{target} {label}"]["latency_ms_256_noisy"] = ms
        results["int8"] = found
        save()
    if "headroom" in results:
        (args.out / "tables.md").write_text(layer_table(results["headroom"]["plain"], results["headroom"]["fp16_safe"],
                                                        scale) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "headroom"}, indent=1, default=float))
    if "headroom" in results:
        print((args.out / "tables.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
