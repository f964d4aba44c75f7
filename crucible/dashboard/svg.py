"""Line plots as inline SVG text: pure, no assets, every label escaped.

One ``<circle class="pt">`` per finite point (so a test, or a reader with the DOM, can count
what is drawn), one ``<polyline>`` per series of two or more points, two axes with their ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape as _html_escape

__all__ = ["PALETTE", "line_plot"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
_LIMIT = 1e300
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 56, 110, 26, 34


def escape(value: str) -> str:
    """Text for an SVG/XML text node or attribute: escaped, control characters as ``\\xNN``
    (XML cannot carry them at all)."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in value)
    return _html_escape(shown, quote=True)


def _clamp(value: float) -> float:
    # far beyond any loss or incentive; keeps every range and its padding finite
    return max(-_LIMIT, min(_LIMIT, float(value)))


def _span(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:  # one value: give it room instead of dividing by zero
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def _label(value: float) -> str:
    return f"{value:.4g}"


def _axes(title: str, x: tuple[float, float], y: tuple[float, float],
          labels: tuple[str, str], size: tuple[int, int]) -> list[str]:  # fmt: skip
    width, height = size
    left, right, top, bottom = _PAD_LEFT, width - _PAD_RIGHT, _PAD_TOP, height - _PAD_BOTTOM
    return [
        f'<text x="{left}" y="16" class="title">{escape(title)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444" class="axis"/>',
        f'<text x="{left}" y="{bottom + 14}" class="tick">{_label(x[0])}</text>',
        f'<text x="{right}" y="{bottom + 14}" class="tick" text-anchor="end">{_label(x[1])}</text>',
        f'<text x="{left - 4}" y="{bottom}" class="tick" text-anchor="end">{_label(y[0])}</text>',
        f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{_label(y[1])}</text>',
        f'<text x="{(left + right) // 2}" y="{height - 4}" class="tick" text-anchor="middle">'
        f"{escape(labels[0])}</text>",
        f'<text x="12" y="{(top + bottom) // 2}" class="tick" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + bottom) // 2})">{escape(labels[1])}</text>',
    ]


def _series(name: str, points: list[tuple[float, float]], color: str, place) -> list[str]:
    xy = [place(px, py) for px, py in points]
    out = []
    if len(xy) >= 2:
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    out += [
        f'<circle class="pt" data-series="{escape(name)}" cx="{a:.1f}" cy="{b:.1f}" r="3" '
        f'fill="{color}"><title>{escape(name)}: {_label(px)}, {_label(py)}</title></circle>'
        for (a, b), (px, py) in zip(xy, points, strict=True)
    ]
    return out


def line_plot(
    plot_id: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str = "block",
    y_label: str = "",
    width: int = 520,
    height: int = 240,
) -> str:
    """An SVG line plot of ``series`` (name → (x, y) points); non-finite points are dropped."""
    clean = {
        name: sorted(
            (_clamp(x), _clamp(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)
        )
        for name, pts in series.items()
    }
    clean = {name: pts for name, pts in clean.items() if pts}
    head = (
        f'<svg id="{escape(plot_id)}" class="plot" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    )
    if not clean:
        body = [
            f'<text x="{_PAD_LEFT}" y="16" class="title">{escape(title)}</text>',
            f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" class="empty">'
            "no data yet</text>",
        ]
        return head + "".join(body) + "</svg>"
    xs = _span([x for pts in clean.values() for x, _ in pts])
    ys = _span([y for pts in clean.values() for _, y in pts])
    left, right, top, bottom = _PAD_LEFT, width - _PAD_RIGHT, _PAD_TOP, height - _PAD_BOTTOM

    def place(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - xs[0]) / (xs[1] - xs[0]) * (right - left),
            bottom - (y - ys[0]) / (ys[1] - ys[0]) * (bottom - top),
        )

    body = _axes(title, xs, ys, (x_label, y_label), (width, height))
    for index, (name, pts) in enumerate(clean.items()):
        color = PALETTE[index % len(PALETTE)]
        body += _series(name, pts, color, place)
        body.append(
            f'<text x="{right + 8}" y="{top + 12 + 14 * index}" fill="{color}" class="legend">'
            f"{escape(name[:18])}</text>"
        )
    return head + "".join(body) + "</svg>"
