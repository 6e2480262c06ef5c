"""embg-fixture: write a fixture checkpoint in the real on-disk layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from embg.cli.common import run_cli, setup_logging, step
from embg.fixtures import FIXTURE_KINDS, write_fixture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embg-fixture",
        description="Write a seeded EmbeddingGemma fixture checkpoint (Hugging Face + sentence-transformers "
                    "layout) for offline tests and benchmarks.",
    )
    parser.add_argument("--kind", required=True, choices=list(FIXTURE_KINDS),
                        help="tiny: seconds to write, crosses its sliding window at ~10 tokens; "
                             "tiny-qat-q4_0 / tiny-qat-q8_0: tiny snapped to the QAT grids; "
                             "tiny-outliers: tiny with the real model's activation outliers (~9e4 on BOS); "
                             "full: the real architecture with random weights (1.2 GB); "
                             "full-qat-q4_0: full snapped to the Q4_0 grid; "
                             "full-outliers: full with the outliers (~1.25e5)")
    parser.add_argument("--out", required=True, type=Path, help="directory to write (replaced atomically)")
    parser.add_argument("--verbose", action="store_true", help="show third-party library output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        step(f"writing fixture {args.kind} to {args.out}")
        write_fixture(args.kind, args.out)
        step("done")
        return 0

    return run_cli("embg-fixture", body)


if __name__ == "__main__":
    raise SystemExit(main())
