"""How every app shows things in the admin and in stored output: one colour per status, badges
that static/vx11/live.js can keep current, an inline SVG chart for results compared over time, and
output tails.
"""

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join

# one colour per status word, whichever app it comes from (modules, daughters, tasks, flow runs, attempts)
STATUS_COLOURS = {
    "up": "#1a7f37",
    "degraded": "#b58105",
    "down": "#cf222e",
    "unknown": "#6e7781",
    "finished": "#1a7f37",
    "completed": "#1a7f37",
    "passed": "#1a7f37",
    "success": "#1a7f37",
    "running": "#0969da",
    "queued": "#8250df",
    "retrying": "#b58105",
    "mutated": "#b58105",
    "failed": "#cf222e",
    "expired": "#cf222e",
    "error": "#cf222e",
    "timeout": "#cf222e",
    "killed": "#6e7781",
    "cancelled": "#6e7781",
    "skipped": "#6e7781",
    # evidence bags: a tampered bag is red until an operator re-seals it
    "valid": "#1a7f37",
    "modified": "#cf222e",
    "missing": "#cf222e",
    "extra": "#cf222e",
    "not_a_bag": "#cf222e",
}
NEUTRAL = "#8c959f"


def badge(status: str, /, css_class: str = "vx11-badge", colour: str | None = None, **data) -> str:
    """A coloured status pill (`colour`, else the status word's own); `data` become data-* attributes (live.js finds
    badges by them)."""
    attrs = format_html_join("", ' data-{}="{}"', ((name.replace("_", "-"), value) for name, value in data.items()))
    return format_html(
        '<span class="{}"{} style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-weight:600">'
        "{}</span>",
        css_class,
        attrs,
        colour or STATUS_COLOURS.get(status, NEUTRAL),
        status,
    )


def tail(text: str | bytes | None, limit: int) -> str:
    """The last `limit` characters of some output, marked when cut."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text or ""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def svg_chart(
    series: dict[str, list[tuple]], width: int = 720, height: int = 180, unit: str = "ms", title: str = "chart"
) -> str:
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
            f"{pad + (t.timestamp() - t0) / span_t * (width - 2 * pad):.1f},"
            f"{height - pad - v / vmax * (height - 2 * pad):.1f}"
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
        f'<text x="{pad}" y="{height - 8}" font-size="11" fill="#666">'
        f"{timezone.localtime(min(t for t, _ in points)):%m-%d %H:%M}</text>"
        f'<text x="{width - pad - 70}" y="{height - 8}" font-size="11" fill="#666">'
        f"{timezone.localtime(max(t for t, _ in points)):%m-%d %H:%M}</text>"
    )
    return (
        f'<svg role="img" aria-label="{title}" width="{width}" height="{height}" '
        f'style="background:#fafafa;border:1px solid #ddd">{axis}{"".join(lines)}{"".join(legend)}</svg>'
    )


class RecordAdmin(admin.ModelAdmin):
    """The admin of rows the portal writes itself (events, state changes, runs, audit rows):
    listed and read, never added or edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RecordInline(admin.TabularInline):
    """The rows of a record shown inside it (findings, metrics, attempts): read, never added, edited or deleted."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ConflictWhenProtected:
    """Admin mixin: a delete refused because of protected rows (one object or the bulk action) answers 409;
    the page still says which rows and why."""

    def delete_view(self, request, object_id, extra_context=None):
        return _conflict_when_protected(super().delete_view(request, object_id, extra_context))

    def response_action(self, request, queryset):
        return _conflict_when_protected(super().response_action(request, queryset))


def _conflict_when_protected(response):
    if response is not None and (getattr(response, "context_data", None) or {}).get("protected"):
        response.status_code = 409
    return response
