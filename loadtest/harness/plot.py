"""A self-contained HTML page (inline SVG, no libraries): TTFAT over time, and users and
replica counts per deployment over time, on one time axis."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from loadtest.harness.stats import TURN_KINDS, RunStats, output_path

W, H, PAD = 1000, 260, 50
RIGHT = W - 240  # the plot's right edge; the legend goes beyond it
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _axes(title: str, t_max: float, y_max: float, y_label: str) -> list[str]:
    out = [f'<text x="{PAD}" y="16" font-weight="bold">{html.escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{RIGHT}" y2="{H - PAD}" stroke="#000"/>',
           f'<line x1="{PAD}" y1="30" x2="{PAD}" y2="{H - PAD}" stroke="#000"/>',
           f'<text x="{(PAD + RIGHT) // 2}" y="{H - 12}" text-anchor="middle">time since start (s)'
           '</text>',
           f'<text x="12" y="{H // 2}" transform="rotate(-90 12 {H // 2})" '
           f'text-anchor="middle">{html.escape(y_label)}</text>']
    for i in range(6):
        t = t_max * i / 5
        x = PAD + (RIGHT - PAD) * i / 5
        out.append(f'<text x="{x:.0f}" y="{H - PAD + 16}" text-anchor="middle" '
                   f'font-size="11">{t:.0f}</text>')
        y_val = y_max * i / 5
        y = H - PAD - (H - PAD - 30) * i / 5
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.0f}" text-anchor="end" '
                   f'font-size="11">{y_val:.{0 if y_max >= 50 else 1}f}</text>')
        out.append(f'<line x1="{PAD}" y1="{y:.0f}" x2="{RIGHT}" y2="{y:.0f}" stroke="#eee"/>')
    return out


def _xy(t: float, v: float, t_max: float, y_max: float) -> tuple[float, float]:
    return (PAD + (RIGHT - PAD) * t / max(t_max, 1e-9),
            H - PAD - (H - PAD - 30) * v / max(y_max, 1e-9))


def _legend(items: list[tuple[str, str]]) -> str:
    return "".join(f'<text x="{RIGHT + 12}" y="{34 + 15 * i}" fill="{c}" font-size="12">'
                   f'&#9632; {html.escape(name)}</text>' for i, (name, c) in enumerate(items))


def render(stats: RunStats, report: dict[str, Any], path: str | Path) -> None:
    samples = report["replicas"]["samples"]
    t_max = max([stats.now(), *(s["t_s"] for s in samples)])
    # TTFAT
    caller = [(t.t_s, t.client_ttfat_ms) for t in stats.turns
              if t.ok and t.kind in TURN_KINDS and t.client_ttfat_ms is not None]
    gw = [(t.t_s, t.gateway["ttfat_ms"]) for t in stats.turns
          if t.ok and t.kind in TURN_KINDS and "ttfat_ms" in t.gateway]
    y_max = math.ceil(max([2000.0, *(v for _, v in caller), *(v for _, v in gw)]) * 1.05
                      / 1000) * 1000  # ticks on round numbers
    svg1 = _axes("TTFAT per turn (ms)", t_max, y_max, "ms")
    for pts, colour, r in ((caller, COLOURS[0], 4), (gw, COLOURS[1], 3)):
        for t, v in pts:
            x, y = _xy(t, v, t_max, y_max)
            svg1.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}" '
                        f'fill-opacity="0.7"><title>{t:.1f} s: {v:.0f} ms</title></circle>')
    slo = report.get("thresholds", {}).get("ttfat_p95_ms")
    if slo:
        _, y = _xy(0, slo, t_max, y_max)
        svg1.append(f'<line x1="{PAD}" y1="{y:.0f}" x2="{RIGHT}" y2="{y:.0f}" stroke="#888" '
                    f'stroke-dasharray="6 4"/><text x="{PAD + 4}" y="{y - 4:.0f}" '
                    f'font-size="11" fill="#888">p95 threshold {slo:.0f} ms</text>')
    svg1.append(_legend([("caller-side TTFAT", COLOURS[0]), ("gateway TTFAT", COLOURS[1])]))
    # users and replicas
    deployments = sorted({d for s in samples for d in s["running"]})
    y2 = 5 * math.ceil((max([2, *(u for _, u, _ in stats.load),
                             *(n for s in samples for n in s["running"].values())]) + 1) / 5)
    svg2 = _axes("users and RUNNING replicas per deployment", t_max, y2, "count")
    series: list[tuple[str, list[tuple[float, float]]]] = [
        ("users", [(t, u) for t, u, _ in stats.load]),
        ("open sessions", [(t, o) for t, _, o in stats.load])]
    series += [(d, [(s["t_s"], s["running"].get(d, 0)) for s in samples]) for d in deployments]
    legend = []
    for i, (name, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        legend.append((name, colour))
        if not pts:
            continue
        path_d, prev_y = "", None
        for t, v in pts:
            x, y = _xy(t, v + 0.03 * (i - 2), t_max, y2)  # equal lines kept apart a little
            path_d += f"M{x:.1f},{y:.1f} " if prev_y is None else f"H{x:.1f} V{y:.1f} "
            prev_y = y
        dash = ' stroke-dasharray="4 3"' if name in ("users", "open sessions") else ""
        svg2.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    svg2.append(_legend(legend))
    title = html.escape(f"voxray load test: {report['scenario']['name']}, "
                        f"{report['run']['users']} users")
    page = (f"<!doctype html><meta charset='utf-8'><title>{title}</title>"
            f"<body style='font-family:sans-serif'><h2>{title}</h2>"
            f"<svg width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg'>{''.join(svg1)}"
            f"</svg><br><svg width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg'>"
            f"{''.join(svg2)}</svg><pre>{html.escape(report.get('text', ''))}</pre></body>")
    output_path(path).write_text(page)
