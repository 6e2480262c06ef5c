"""embg-export: checkpoint -> bundle (.tflite or .onnx, tokenizer, manifest.json)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embg.bundle import Artifact
from embg.cli.common import run_cli, setup_logging, step
from embg.errors import EmbgError
from embg.checkpoint.resolve import DEFAULT_MODEL
from embg.quantize.recipe import BITS_TO_PRESET, load_recipe, parse_recipe, preset_names, recipe_for_bits
from embg.validate.thresholds import parity_shortfalls


def parse_seq_lens(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EmbgError(f"--seq-lens takes comma-separated integers, got {text!r}") from None
    if not values:
        raise EmbgError("--seq-lens is empty")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embg-export",
        description="Export EmbeddingGemma (whole embedder: token ids + mask in, normalised embedding out) "
                    "to a LiteRT or ONNX bundle, quantized per a recipe, with parity checked on the written file.",
        epilog="Examples:\n  embg-export --model tiny --target onnx --bits 8\n"
               "  embg-export --target tflite --bits 4 --out bundles/int4\n"
               "Built-in offline fixtures for --model: tiny, tiny-qat-q4_0, tiny-qat-q8_0, tiny-outliers, full, full-qat-q4_0, full-outliers (embg-fixture --help says what each is).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id, local checkpoint directory, or built-in fixture (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--target", required=True, help="export format: tflite or onnx (the registered targets)")
    parser.add_argument("--bits", type=int, help="shorthand for a preset recipe: "
                        f"{', '.join(f'{bits} {name}' for bits, name in BITS_TO_PRESET.items())} (with neither --bits nor "
                        "--recipe: fp32); a QAT checkpoint "
                        "gets its -qat preset; --bits 8 uses int8-rotated where it simulates as well as int8 on held-out "
                        "texts (the real model does), else int8; onnx --bits 4 uses int4-rotated-int6 where its blocks "
                        "fit the model (the real model's sizes) and its calibration holds, else int4")
    parser.add_argument("--recipe", help=f"preset name ({', '.join(preset_names())}) or a recipe .json file")
    parser.add_argument("--dim", type=int, help="Matryoshka output dimension (768, 512, 256 or 128 for the real model)")
    parser.add_argument("--seq-lens", help="tflite: comma-separated sequence buckets, one signature each "
                                           "(default 32,64,128,256,512,1024,2048); refused for onnx")
    parser.add_argument("--web-compatible", action="store_true",
                        help="onnx: avoid GatherBlockQuantized (onnxruntime-web lacks it); int4 embedding becomes int8")
    parser.add_argument("--force-grid", action="store_true",
                        help="with a -qat recipe: proceed even when weights are off the Q4_0/Q8_0 grid (warns)")
    parser.add_argument("--out", type=Path, help="bundle directory (default ./<model>_<target>_<recipe>); an existing "
                                                 "directory is replaced only if it holds an earlier bundle")
    parser.add_argument("--skip-parity", action="store_true", help="do not run the export-time parity check")
    parser.add_argument("--verbose", action="store_true", help="show third-party converter output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from embg.export.base import TARGETS
        from embg.export.bits_choice import plan_text
        from embg.export.options import ExportOptions
        from embg.export.pipeline import ExportRequest, export_bundle, load_targets

        load_targets()
        if args.target not in TARGETS:
            raise EmbgError(f"unknown --target {args.target!r}; choose one of {', '.join(TARGETS.names())}")
        if args.bits is not None and args.recipe:
            raise EmbgError("give --bits or --recipe, not both")
        if args.dim is not None and args.dim < 1:
            raise EmbgError(f"--dim {args.dim} must be a positive Matryoshka dimension (768, 512, 256 or 128 for "
                            "the real model)")
        recipe = load_recipe(args.recipe) if args.recipe else recipe_for_bits(args.bits if args.bits is not None else 32)
        preferred = TARGETS.get(args.target).bits_presets.get(args.bits) if args.bits is not None else None
        if preferred:  # the target's own preset for these bits, tried first (ExportTarget.bits_presets)
            print(f"--bits {args.bits} on {args.target}: {plan_text(args.bits, preferred, recipe.name)}", file=sys.stderr)
            summarised = None
        else:
            print(recipe.summary(), file=sys.stderr)
            summarised = recipe.name
        request = ExportRequest(
            model=args.model, target=args.target, recipe=recipe, out=args.out, dim=args.dim,
            seq_lens=parse_seq_lens(args.seq_lens) if args.seq_lens else (), revision=args.revision,
            token=os.environ.get("HF_TOKEN"), parity=not args.skip_parity,
            options=ExportOptions(web_compatible=args.web_compatible, force_grid=args.force_grid,
                                  auto_qat=args.bits is not None),
        )
        out = export_bundle(request, progress=step)
        manifest = dict(Artifact.load(out).manifest)
        if manifest["recipe"]["name"] != summarised:  # --bits chose another recipe (QAT grid, target preset)
            print(f"used {parse_recipe(manifest['recipe']).summary()}", file=sys.stderr)
        shortfalls = parity_shortfalls(manifest)
        if shortfalls:  # written and usable, but it will fail embg-validate: say so now, not after a deploy
            print(f"embg-export: WARNING: parity of the written file is under the validator's gate: "
                  f"{'; '.join(shortfalls)}. Try another recipe (e.g. --bits 8, or int4 instead of a rotated "
                  "preset) and check with embg-validate.", file=sys.stderr)
        print(out)
        return 0

    return run_cli("embg-export", body)


if __name__ == "__main__":
    raise SystemExit(main())
