"""Validation: evaluation texts, metrics, latency/memory probes, reports, the regression gate."""
