"""Charts for admin pages: results people compare over time (latency, flow durations, coherence)."""

from django.utils import timezone


def svg_chart(series: dict[str, list[tuple]], width: int = 720, height: int = 180, unit: str = "ms", title: str = "chart") -> str:
    """A small inline SVG line chart: {label: [(datetime, value), ...]}; no JavaScript, no CDN."""
    points = [(t, v) for s in series.values() for t, v in s if v is not None]
    if not points:
        return ""
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    vmax = max(v for _, v in points) or 1.0
    pad, span_t = 30, (t1 - t0) or 1.0
    colours = ["#0969da", "#cf222e", "#1a7f37", "#8250df"]
    lines, legend = [], []
    for i, (label, data) in enumerate(series.items()):
        coords = " ".join(
            f"{pad + (t.timestamp() - t0) / span_t * (width - 2 * pad):.1f},{height - pad - v / vmax * (height - 2 * pad):.1f}"
            for t, v in data
            if v is not None
        )
        colour = colours[i % len(colours)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        legend.append(f'<text x="{pad + 110 * i}" y="14" fill="{colour}" font-size="12">{label}</text>')
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="2" y="{pad}" font-size="11" fill="#666">{vmax:.0f} {unit}</text>'
        f'<text x="2" y="{height - pad}" font-size="11" fill="#666">0</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="11" fill="#666">{timezone.localtime(min(t for t, _ in points)):%m-%d %H:%M}</text>'
        f'<text x="{width - pad - 70}" y="{height - 8}" font-size="11" fill="#666">{timezone.localtime(max(t for t, _ in points)):%m-%d %H:%M}</text>'
    )
    return f'<svg role="img" aria-label="{title}" width="{width}" height="{height}" style="background:#fafafa;border:1px solid #ddd">{axis}{"".join(lines)}{"".join(legend)}</svg>'
