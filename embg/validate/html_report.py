"""report.html: one self-contained page (inline CSS, inline SVG plots, no network)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from embg.validate import plots
from embg.validate.summary import failed_label, fmt, markdown_summary

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.pass{color:#137333}.fail,.partial{color:#b3261e;font-weight:bold}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:8px;overflow:auto}code{font-size:12px}
"""

# counts the plots after load; a JS error would leave the text unset, which the headless test sees
CHECK_SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var n = document.querySelectorAll('figure.plot svg').length;
  document.getElementById('render-check').textContent = 'plots rendered: ' + n;
});
"""


def _figure(element_id: str, caption: str, svg: str | None) -> str:
    body = svg if svg is not None else "<p>plots need matplotlib: pip install 'embg-export[report]'</p>"
    return f'<figure class="plot" id="{element_id}">{body}<figcaption>{escape(caption)}</figcaption></figure>'


def _checks_table(entry: dict[str, Any]) -> str:
    rows = ["<tr><th>metric</th><th>value</th><th>limit</th><th>baseline</th><th>change</th><th>result</th></tr>"]
    for check in entry["checks"]:
        change = check["change"]
        if change is not None:
            change = f"{change:+.2%}" if check["op"] == "<=" and check["source"] == "baseline" else f"{change:+.6f}"
        css = "pass" if check["passed"] else "fail"
        rows.append(f"<tr><td>{escape(check['metric'])}</td><td>{fmt(check['value'])}</td>"
                    f"<td>{escape(check['op'])} {fmt(check['limit'])}</td><td>{fmt(check['baseline'])}</td>"
                    f"<td>{escape(change or '')}</td><td class='{css}'>{'pass' if check['passed'] else 'FAIL'}</td></tr>")
    return "<table class='checks'>" + "".join(rows) + "</table>"


def _latency_table(entry: dict[str, Any]) -> str:
    lat = entry["metrics"]["latency"]
    rows = ["<tr><th>bucket</th><th>seq</th><th>batch</th><th>p50 ms</th><th>p90 ms</th><th>ms/text</th></tr>"]
    for key, b in lat["buckets"].items():
        rows.append(f"<tr><td>{key}</td><td>{b['seq_len']}</td><td>{b['batch']}</td><td>{b['p50_ms']:.2f}</td>"
                    f"<td>{b['p90_ms']:.2f}</td><td>{b['per_text_p50_ms']:.2f}</td></tr>")
    head = (f"<p>cold load {lat['cold_load_s']:.3f} s, first embed {lat['first_embed_s']:.3f} s; "
            f"memory {escape(json.dumps(entry['metrics']['memory']))}; size {escape(json.dumps(entry['metrics']['size']))}</p>")
    return head + "<table>" + "".join(rows) + "</table>"


def _modes_table(entry: dict[str, Any]) -> str:
    """Drift per parity mode (the headline is the worst of them) and alone-vs-batched consistency."""
    by_mode = entry["metrics"].get("drift_by_mode") or {}
    consistency = entry["metrics"].get("batch_consistency") or {}
    rows = ["<tr><th>mode</th><th>cosine min</th><th>cosine mean</th><th>max |diff|</th><th>NaN/inf rows</th>"
            "<th>alone vs this mode (min)</th></tr>"]
    for mode, m in by_mode.items():
        rows.append(f"<tr><td>{escape(mode)}</td><td>{fmt(m.get('cosine_min'))}</td><td>{fmt(m.get('cosine_mean'))}</td>"
                    f"<td>{fmt(m.get('max_abs_diff'))}</td><td>{m.get('nonfinite')}</td>"
                    f"<td>{fmt((consistency.get('by_mode') or {}).get(mode))}</td></tr>")
    return "<table class='modes'>" + "".join(rows) + "</table>"


def _worst(entry: dict[str, Any]) -> str:
    rows = ["<tr><th>#</th><th>task</th><th>kind</th><th>cosine</th><th>mode</th><th>text</th></tr>"]
    rows += [f"<tr><td>{w['index']}</td><td>{escape(w['task'])}</td><td>{escape(w['kind'])}</td>"
             f"<td>{w['cosine']:.6f}</td><td>{escape(w.get('mode', ''))}</td><td>{escape(w['preview'])}</td></tr>"
             for w in entry["worst_texts"]]
    return "<table>" + "".join(rows) + "</table>"


def _devices(report: dict[str, Any]) -> str:
    if not report.get("devices"):
        return ""
    rows = ["<tr><th>device</th><th>kind</th><th>machine</th><th>emulated</th><th>engines</th><th>rows ok</th>"
            "<th>rows failed</th></tr>"]
    for d in report["devices"]:
        engines = ", ".join(f"{e.get('engine')} {e.get('version')}" for e in d.get("engines", []))
        rows.append(f"<tr><td>{escape(str(d.get('name')))}</td><td>{escape(str(d.get('kind')))}</td>"
                    f"<td>{escape(str(d.get('machine', '?')))}</td><td>{escape(str(d.get('emulated', '?')))}</td>"
                    f"<td>{escape(engines)}</td><td>{d.get('rows', {}).get('ok', '')}</td>"
                    f"<td>{d.get('rows', {}).get('failed', '')}</td></tr>")
    return "<h2>Devices</h2><table id='devices'>" + "".join(rows) + "</table>"


def _status_table(report: dict[str, Any]) -> str:
    rows = ["<tr><th>combination</th><th>status</th></tr>"]
    for name, status in report.get("status", {}).items():
        css = "pass" if status == "ok" else "fail"
        rows.append(f"<tr><td>{escape(name)}</td><td class='{css}'>{escape(status)}</td></tr>")
    return "<h2>Combinations</h2><table id='combinations'>" + "".join(rows) + "</table>"


def _history(report: dict[str, Any]) -> str:
    history = report.get("history")
    if not history:
        return ""
    from embg.validate.history import trend_table_html

    return ("<h2>History</h2>" + trend_table_html(history)
            + _figure("plot-trend-cos", "cosine min per combination over runs", plots.trend(history, "cos_min"))
            + _figure("plot-trend-p50", "p50 latency (longest bucket) per combination over runs",
                      plots.trend(history, "p50_ms")))


def render_html(report: dict[str, Any]) -> str:
    status = "PASS" if report["passed"] else "FAIL"
    if report.get("partial"):
        status = "PARTIAL"
    every = report["bundles"]
    entries = [e for e in every if e.get("status", "ok") == "ok"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>embg-validate {status}</title><style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>embg-validate: <span class='{status.lower()}' id='status'>{status}</span></h1>",
        f"<p id='render-check'></p><p>{escape(report['created'])} &middot; {report['seconds']} s &middot; "
        f"{report['texts']['count']} texts ({escape(report['texts']['source'])})</p>",
        "<h2>Summary</h2>", f"<pre>{escape(markdown_summary(report))}</pre>",
        "<h2>Plots</h2>",
        _figure("plot-latency", "warm latency per bucket (p50 bar, whisker to p90)", plots.latency_buckets(entries)),
        _figure("plot-size-drift", "model file size vs drift (1 - mean cosine)", plots.size_vs_drift(entries)),
        _devices(report), _status_table(report), _history(report),
    ]
    for i, entry in enumerate(every):
        if entry.get("status", "ok") != "ok":
            parts.append(f"<section class='bundle failed' id='bundle-{i}'><h2>{escape(entry['combination'])}: "
                         f"<span class='fail'>{failed_label(entry)}</span></h2><pre>{escape(entry['error'])}</pre></section>")
            continue
        css = "pass" if entry["passed"] else "fail"
        parts += [
            f"<section class='bundle' id='bundle-{i}'><h2>{escape(entry.get('combination', entry['name']))}: "
            f"<span class='{css}'>{'PASS' if entry['passed'] else 'FAIL'}</span></h2>",
            f"<p>{escape(entry['path'])} &middot; target {escape(entry['target'])} &middot; recipe "
            f"{escape(str(entry['recipe']))} &middot; thresholds {escape(entry['threshold_class'])} &middot; "
            f"manifest sha256 <code>{entry['manifest_sha256']}</code></p>",
            f"<p>runtime {escape(json.dumps(entry['runtime']))}</p>",
            _figure(f"plot-cosine-hist-{i}", f"per-text cosine of {entry['name']} vs sentence-transformers",
                    plots.cosine_histogram(entry)),
            "<h3>Checks</h3>", _checks_table(entry),
            "<h3>Parity per mode (texts alone and in padded batches)</h3>", _modes_table(entry),
            "<h3>Latency, memory, size</h3>", _latency_table(entry),
            "<h3>Lowest cosine texts</h3>", _worst(entry), "</section>",
        ]
    parts += ["<h2>Device and versions</h2>",
              f"<pre>{escape(json.dumps({'device': report['device'], 'versions': report['versions'], 'reference': report['reference']}, indent=2))}</pre>",
              "<h2>Thresholds</h2>", f"<pre>{escape(json.dumps(report['thresholds'], indent=1))}</pre>",
              f"<pre>{escape(json.dumps(report['baseline_margins'], indent=1))}</pre>",
              "</body></html>"]
    return "\n".join(parts)
