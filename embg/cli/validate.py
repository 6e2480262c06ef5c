"""embg-validate: run bundles in their runtimes against sentence-transformers on the original checkpoint.

Exit status: 0 every metric within its threshold (and baseline margin), 1 a metric failed (the
report is still written), 2 bad input (missing bundle or model, hash mismatch, unknown runtime,
empty texts file, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embg.cli.common import run_cli, setup_logging, step


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embg-validate",
        description="Run exported bundles in their runtimes against sentence-transformers on the original "
                    "checkpoint and report drift, retrieval agreement, latency and memory.",
        epilog="Exit status: 0 pass, 1 a metric failed its threshold or baseline margin, 2 bad input.\n"
               "Example: embg-validate out/onnx-int8 out/tflite-int8 --report report/ --baseline old/report.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE", help="bundle directories")
    parser.add_argument("--model", help="checkpoint the bundles were exported from (hub id, directory or fixture); "
                                        "default: the model id in the bundles' manifest")
    parser.add_argument("--texts", type=Path, help="evaluation texts: one per line, or JSONL "
                                                   '{"task": "query"|"document"|<prompt name>, "text": ...}; '
                                                   "default: the built-in set")
    parser.add_argument("--threads", type=int, default=1, help="runtime and reference threads (default 1: "
                                                               "comparable numbers on shared machines)")
    parser.add_argument("--report", type=Path, default=Path("validate-report"),
                        help="directory for report.json, report.html and summary.md (default ./validate-report)")
    parser.add_argument("--baseline", type=Path, help="an earlier report.json: also fail on regressions beyond "
                                                      "the stated margins")
    parser.add_argument("--runtime", help="run every bundle in this runtime instead of the manifest's")
    parser.add_argument("--latency-repeats", type=int, default=10, help="timed runs per bucket (default 10)")
    parser.add_argument("--no-memory", action="store_true", help="skip the separate-process peak RSS probe")
    parser.add_argument("--verbose", action="store_true", help="show third-party output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from embg.errors import EmbgError
        from embg.validate.report import markdown_summary, write_reports
        from embg.validate.run import ValidateOptions, run

        if args.latency_repeats < 1:
            raise EmbgError("--latency-repeats must be at least 1")
        options = ValidateOptions(
            bundles=list(args.bundles), model=args.model, texts=args.texts, threads=args.threads,
            report_dir=args.report, baseline=args.baseline, runtime=args.runtime,
            latency_repeats=args.latency_repeats, memory=not args.no_memory,
            argv=["embg-validate", *(sys.argv[1:] if argv is None else argv)], progress=step,
        )
        report = run(options)
        paths = write_reports(report, args.report)
        print(markdown_summary(report))
        step(f"report written: {paths['json']}, {paths['html']}, {paths['markdown']}")
        return 0 if report["passed"] else 1

    return run_cli("embg-validate", body)


if __name__ == "__main__":
    raise SystemExit(main())
