"""Would int8 rows for frequent tokens lift int4 retrieval agreement? Torch simulation on a real checkpoint.

    python -m bench.table_rows --model DIR [--recipe int4-rotated] [--rows 8192,16384] [--coarse-block 128]
                               [--low-bits 3 [--int8 gate_proj,up_proj]] [--threads 1] [--out FILE.json]

The int4 table (block 64) costs top-10 agreement on short texts. A table split by token frequency
would keep the rows of frequent tokens int8 (per row) and pay for them with coarser blocks (128) on the
others. This measures, with the recipe's calibrated weights everywhere else (float activations), on the
validator's 477 retrieval pairs (bench/weight_agreement.py's bench):

* the recipe's weights, and its table at block 128;
* an upper bound no real list reaches: the rows of exactly the ids those texts use, float and int8;
* the ``--rows`` most frequent ids of a list built without the validator's texts (:func:`frequent_ids`:
  wordfreq's word lists for its 42 languages, English 30%, in three spellings, plus the built-in
  calibration texts), int8, the rest at block 64 and at ``--coarse-block`` (128); and how many of the evaluated texts'
  tokens each list covers.

``--low-bits B`` asks the opposite question: the frequent rows as the recipe has them and the rest at B
bits (block ``--coarse-block``, per-block MSE scales), the bytes that saves spent on int8 decoder parts
(``--int8 PARTS``, calibrated again without them at int4).

Needs ``pip install wordfreq`` (a bench-only dependency). One pass over the 954 texts: ~3 minutes.
"""

from __future__ import annotations

import argparse
import json
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from embg.quantize.int4_blocks import blocks_of, dequantize, mse_scales, quantize_rows, round_to_grid
from embg.quantize.simulate import int8_rows as int8_per_row  # one scale per row: the int8 table's grid

WORDS_PER_LANGUAGE = 30000
SPELLINGS = ((lambda w: " " + w, 0.6), (lambda w: " " + w[:1].upper() + w[1:], 0.25), (lambda w: w, 0.15))
MASS = {"english": 0.3, "other_languages": 0.45, "calibration_texts": 0.25}


def wordfreq_lists() -> dict[str, dict[str, float]]:
    """language -> {word: frequency} from wordfreq (its own tables: no MeCab needed for ja/ko)."""
    try:
        import wordfreq
    except ImportError as error:
        raise SystemExit("bench.table_rows needs wordfreq: pip install wordfreq") from error
    return {language: wordfreq.get_frequency_dict(language, wordlist="best")
            for language in sorted(wordfreq.available_languages(wordlist="best"))}


def frequent_ids(tokenizer, vocab: int, word_lists: dict[str, dict[str, float]] | None = None) -> list[int]:
    """Token ids below ``vocab``, most frequent first, estimated without the validator's texts."""
    from embg.textdata import calibration_texts

    word_lists = wordfreq_lists() if word_lists is None else word_lists
    counts: Counter = Counter()
    for language, table in word_lists.items():
        share = MASS["english"] if language == "en" else MASS["other_languages"] / max(1, len(word_lists) - 1)
        words = sorted(table, key=table.get, reverse=True)[:WORDS_PER_LANGUAGE]
        weights = np.array([table[w] for w in words])
        weights = share * weights / weights.sum()
        for spell, part in SPELLINGS:  # word lists are lower case and space-separated
            for weight, ids in zip(weights, tokenizer([spell(w) for w in words], add_special_tokens=False)["input_ids"]):
                for i in ids:
                    counts[i] += part * weight
    texts = tokenizer([t.text for t in calibration_texts()], add_special_tokens=False)["input_ids"]
    calibration = Counter(i for ids in texts for i in ids)
    total = sum(calibration.values())
    for i, n in calibration.items():
        counts[i] += MASS["calibration_texts"] * n / total
    for ids in tokenizer(list(string.printable), add_special_tokens=False)["input_ids"]:
        for i in ids:
            counts[i] += 1e-6
    for i in tokenizer.all_special_ids:
        counts[i] += 1.0
    return [i for i, _ in counts.most_common() if i < vocab]


def with_rows(base: torch.Tensor, table: torch.Tensor, ids: torch.Tensor,
              rows_as: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A weight replacement: ``base`` with the rows ``ids`` as ``rows_as(table[ids])``."""
    def replace(_weight: torch.Tensor) -> torch.Tensor:
        out = base.clone()
        out[ids] = rows_as(table[ids])
        return out
    return replace


def low_bit_rows(table: torch.Tensor, bits: int, block: int, steps: int = 24, chunk: int = 8192) -> torch.Tensor:
    """``table`` on a symmetric ``bits``-bit grid with one storable scale per block of ``block`` columns, each
    the clip of the block's range (0.5-1x) with the least squared error (the int4 table's search)."""
    out = torch.empty(table.shape, dtype=torch.float32)
    for start in range(0, table.shape[0], chunk):
        blocks = blocks_of(table[start:start + chunk], block)
        scales = mse_scales(blocks, steps=steps, bits=bits)[..., None]
        out[start:start + chunk] = (round_to_grid(blocks, scales, bits) * scales).reshape(blocks.shape[0], -1)
    return out


def measure_low_bit_rest(bench, recipe, weights: dict, name: str, args: argparse.Namespace,
                         ranked: list[int], tokens: np.ndarray) -> None:
    """--low-bits: the frequent rows as the recipe's table, the rest at ``--low-bits``, on the decoder the
    recipe has with ``--int8`` parts int8 per channel."""
    from bench.weight_agreement import with_rules

    table = dict(bench.graph.named_parameters())[name].detach().clone()
    if args.int8:
        parts = args.int8.split(",")
        label = f"{'/'.join(parts)} int8"
        weights = bench.weights(with_rules(recipe, {part: {"bits": 8, "granularity": "channel"} for part in parts}, label))
        bench.measure(f"{label}, the recipe's table", weights)
    else:
        label = "the recipe's decoder"
    recipe_table = weights[name](table)
    low = low_bit_rows(table, args.low_bits, args.coarse_block)
    for count in (int(c) for c in args.rows.split(",")):
        rows = low.clone()
        rows[ranked[:count]] = recipe_table[ranked[:count]]
        cover = float(np.isin(tokens, ranked[:count]).mean())
        bench.measure(f"{label}; {count} frequent rows (cover {cover:.1%}) as the recipe's, the rest int{args.low_bits} "
                      f"block {args.coarse_block}", {**weights, name: lambda _w, rows=rows: rows})


def main(argv: list[str] | None = None) -> int:
    from bench.weight_agreement import recipe_bench

    parser = argparse.ArgumentParser(prog="python -m bench.table_rows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--recipe", default="int4-rotated", help="preset name or recipe .json")
    parser.add_argument("--rows", default="8192,16384", help="comma-separated counts of frequent rows (kept int8; with --low-bits, kept as the recipe's)")
    parser.add_argument("--coarse-block", type=int, default=128, help="block of the other rows (default 128)")
    parser.add_argument("--low-bits", type=int, choices=(2, 3),
                        help="instead: the rows past --rows at this many bits (block --coarse-block)")
    parser.add_argument("--int8", metavar="PARTS", help="with --low-bits: these comma-separated decoder parts int8 "
                        "per channel (e.g. gate_proj,up_proj)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.int8 and not args.low_bits:
        parser.error("--int8 goes with --low-bits")
    bench, recipe, weights = recipe_bench(args)
    name = next(n for n in weights if "embed_tokens" in n)
    table = dict(bench.graph.named_parameters())[name].detach().clone()
    tokens = torch.cat([ids[mask > 0] for ids, mask in bench.batches]).numpy()
    ranked = frequent_ids(bench.tokenizer.backend, table.shape[0])
    if args.low_bits:
        measure_low_bit_rest(bench, recipe, weights, name, args, ranked, tokens)
    else:
        measure_int8_rows(bench, weights, name, table, args, ranked, tokens)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "recipe": recipe.name,
                                        "rows": bench.rows}, indent=1) + "\n", encoding="utf-8")
    return 0


def measure_int8_rows(bench, weights: dict, name: str, table: torch.Tensor, args: argparse.Namespace,
                      ranked: list[int], tokens: np.ndarray) -> None:
    """The default: block ``--coarse-block``, the upper bounds, and the ``--rows`` frequent rows int8."""
    block64 = weights[name](table)
    coarse = dequantize(*quantize_rows(table, args.coarse_block, "mse"))
    bench.measure(f"table at block {args.coarse_block}", {**weights, name: lambda _w: coarse})
    used = torch.unique(torch.cat([ids.flatten() for ids, _ in bench.batches]))
    bench.measure(f"upper bound: the {used.numel()} ids these texts use, float", {**weights, name: with_rows(
        block64, table, used, lambda rows: rows)})
    bench.measure(f"upper bound: the {used.numel()} ids these texts use, int8", {**weights, name: with_rows(
        block64, table, used, int8_per_row)})
    for count in (int(c) for c in args.rows.split(",")):
        ids = torch.tensor(ranked[:count], dtype=torch.long)
        coverage = float(np.isin(tokens, ranked[:count]).mean())
        print(f"{count} frequent ids cover {coverage:.1%} of these texts' tokens", flush=True)
        for label, base in (("64", block64), (str(args.coarse_block), coarse)):
            bench.measure(f"{count} frequent rows int8, the rest block {label}", {**weights, name: with_rows(
                base, table, ids, int8_per_row)})
        bench.rows[-1]["coverage"] = round(coverage, 4)


if __name__ == "__main__":
    raise SystemExit(main())
