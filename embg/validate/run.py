"""embg-validate end to end: check inputs (embg.validate.inputs), measure every bundle in its runtime
against the reference (measure), gate each row (rows), and assemble the report dict (assemble) that
embg.validate.report writes.

Order matters for users: everything that can be bad input (bundles, runtime names, texts file,
baseline, model, weights hash) is checked before any slow work, so exit 2 comes fast.
"""

from __future__ import annotations

import time
from typing import Any

from embg.validate.assemble import assemble, device_description
from embg.validate.inputs import ValidateOptions, prepare
from embg.validate.measure import ReferenceCache
from embg.validate.rows import bundle_entry


def run(options: ValidateOptions) -> dict[str, Any]:
    """Validate every bundle; returns the report dict (its "passed" decides the exit status)."""
    started = time.perf_counter()
    prepared = prepare(options)
    reference = ReferenceCache(prepared.model, options.threads)
    entries = []
    for number, (artifact, runtime_name) in enumerate(zip(prepared.artifacts, prepared.runtime_names), 1):
        options.progress(f"[{number}/{len(prepared.artifacts)}] {artifact.directory}")
        entries.append(bundle_entry(artifact, runtime_name, prepared, reference, options))
    devices = [device_description(entries, options.device, options.device_options)] if options.device else []
    return assemble(options, prepared, reference, entries, started, devices)
