"""embg-validate: run bundles in their runtimes against sentence-transformers on the original checkpoint.

Exit status: 0 every metric within its threshold (and baseline margin), 1 a metric failed or a
device failed mid-run (the report is still written; with a device failure it is marked partial and
says per combination what ran), 2 bad input (missing bundle or model, hash mismatch, unknown runtime,
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
        epilog="Exit status: 0 pass, 1 a metric failed its threshold or baseline margin, or a device failed\n"
               "(partial report), 2 bad input.\n"
               "Example: embg-validate out/onnx-int8 out/tflite-int8 --report report/ --baseline old/report.json\n"
               "         embg-validate out/tflite-int8 --device qemu-arm64:cortex-a76 --quick\n"
               "         embg-validate --devices devices.toml --history nightly-history/ --report report/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundles", nargs="*", type=Path, metavar="BUNDLE",
                        help="bundle directories (with --devices: the default for devices that list none)")
    parser.add_argument("--model", help="checkpoint the bundles were exported from (hub id, directory or fixture); "
                                        "default: the model id in the bundles' manifest")
    parser.add_argument("--texts", type=Path, help="evaluation texts: a named set (builtin, or retrieval: real "
                                                   "query/document pairs), or a file with one text per line, or JSONL "
                                                   '{"task": "query"|"document"|<prompt name>, "text": ...}; '
                                                   "default: builtin")
    parser.add_argument("--threads", type=int, default=1, help="runtime and reference threads (default 1: "
                                                               "comparable numbers on shared machines)")
    parser.add_argument("--report", type=Path, default=Path("validate-report"),
                        help="directory for report.json, report.html and summary.md (default ./validate-report)")
    parser.add_argument("--baseline", type=Path, help="an earlier report.json: also fail on regressions beyond "
                                                      "the stated margins")
    parser.add_argument("--runtime", help="run every bundle in this runtime instead of the manifest's")
    parser.add_argument("--latency-repeats", type=int, default=10, help="timed runs per bucket (default 10)")
    parser.add_argument("--no-memory", action="store_true", help="skip the separate-process peak RSS probe")
    parser.add_argument("--device", help="where the runtime runs: local | ssh:USER@HOST[:PORT] | qemu-arm64[:CPU] "
                                         "| browser | adb[:SERIAL] | aihub:NAME | any registered device kind (default: "
                                         "in this process)")
    parser.add_argument("--device-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option for the --device runner, as a devices.toml key would give it "
                             "(e.g. compute_unit=npu for aihub); repeatable")
    parser.add_argument("--devices", type=Path, metavar="TOML",
                        help="a device matrix (devices.toml): every device x bundle, devices in parallel, one report")
    parser.add_argument("--history", type=Path, metavar="DIR",
                        help="keep this run's report.json under DIR/<timestamp>/, show the trend of earlier runs, "
                             "and use the last passing run as --baseline when none is given")
    parser.add_argument("--quick", action="store_true",
                        help="a few short built-in texts and the two smallest latency buckets (emulated devices)")
    parser.add_argument("--insecure-host-key", action="store_true",
                        help="ssh devices: accept an UNKNOWN host key on first use (accept-new); a changed key "
                             "still fails. Default: host keys must already be in known_hosts")
    parser.add_argument("--ssh-identity", type=Path, help="ssh devices: private key file (key auth only)")
    parser.add_argument("--known-hosts", type=Path, help="ssh devices: known_hosts file to verify host keys against")
    parser.add_argument("--clear-cache", action="store_true",
                        help="remove every XNNPACK weight-cache file (EMBG_XNNPACK_CACHE, default ~/.cache/embg/xnnpack) "
                             "first; without bundles, only that")
    parser.add_argument("--verbose", action="store_true", help="show third-party output")
    return parser


def parse_device_options(pairs: list[str]) -> dict[str, str]:
    from embg.errors import EmbgError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EmbgError(f"--device-option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from embg.errors import EmbgError
        from embg.validate.report import write_reports
        from embg.validate.summary import markdown_summary
        from embg.validate.inputs import ValidateOptions
        from embg.validate.run import run

        if args.latency_repeats < 1:
            raise EmbgError("--latency-repeats must be at least 1")
        if args.device and args.devices:
            raise EmbgError("give --device or --devices, not both")
        if args.clear_cache:
            from embg.runtimes.weight_cache import clear

            cleared = clear()
            if cleared["directory"] is None:
                step("the XNNPACK weight cache is off (EMBG_XNNPACK_CACHE=off): nothing to clear")
            else:
                step(f"XNNPACK weight cache {cleared['directory']}: removed {cleared['removed']} entr"
                     f"{'y' if cleared['removed'] == 1 else 'ies'} ({cleared['bytes'] / 2**20:.1f} MB)")
            if not args.bundles and not args.devices:
                return 0
        if not args.bundles and not args.devices:
            raise EmbgError("give at least one bundle directory (or --devices devices.toml)")
        device_options = {k: v for k, v in (("identity", args.ssh_identity and str(args.ssh_identity)),
                                            ("known_hosts", args.known_hosts and str(args.known_hosts)),
                                            ("insecure_host_key", args.insecure_host_key or None)) if v}
        device_options.update(parse_device_options(args.device_option))
        baseline = args.baseline
        if baseline is None and args.history is not None:
            from embg.validate.history import last_report

            baseline = last_report(args.history)
            if baseline is not None:
                step(f"baseline: the history's last run {baseline}")
        options = ValidateOptions(
            bundles=list(args.bundles), model=args.model, texts=args.texts, threads=args.threads,
            report_dir=args.report, baseline=baseline, runtime=args.runtime,
            latency_repeats=args.latency_repeats, memory=not args.no_memory, device=args.device,
            device_options=device_options, quick=args.quick,
            argv=["embg-validate", *(sys.argv[1:] if argv is None else argv)], progress=step,
        )
        if args.devices:
            from embg.validate.matrix import load_plan, run_matrix

            plan = load_plan(args.devices, list(args.bundles))
            for row in plan.rows:  # command-line device options apply to every row that does not set them
                row.options = {**device_options, **row.options}
            settings = plan.settings
            options.model = args.model or settings.get("model")
            options.quick = args.quick or bool(settings.get("quick", False))
            options.texts = args.texts or settings.get("texts")
            options.threads = settings.get("threads", options.threads)
            options.latency_repeats = settings.get("latency_repeats", options.latency_repeats)
            report = run_matrix(plan, options)
        else:
            report = run(options)
        if args.history is not None:
            from embg.validate.history import record, trend

            report["history"] = trend(args.history, report)
        paths = write_reports(report, args.report)
        if args.history is not None:
            step(f"history: {record(report, args.history)}")
        print(markdown_summary(report))
        step(f"report written: {paths['json']}, {paths['html']}, {paths['markdown']}")
        if report.get("partial"):
            step("PARTIAL report: " + "; ".join(f"{k}: {v}" for k, v in report["status"].items()))
        return 0 if report["passed"] else 1

    return run_cli("embg-validate", body)


if __name__ == "__main__":
    raise SystemExit(main())
