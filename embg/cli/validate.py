"""embg-validate: run bundles on real runtimes against the reference (see README)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="embg-validate",
        description="Run exported bundles in their runtimes against sentence-transformers on the original "
                    "checkpoint and report drift, retrieval agreement, latency and memory.",
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
