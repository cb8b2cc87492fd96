"""What the admin's scorecard page shows: one scorecard's metrics as cards coloured by status, where each value's
evidence is and whether apps.evidence found its bag intact, the verdict with its decision logic, and a 30-day
trend per metric drawn as inline SVG on the server (no JavaScript, no CDN; the page's own script only swaps
the board in when a new snapshot is announced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from apps.evidence.models import Evidence
from vx11_site.display import NEUTRAL, STATUS_COLOURS

from .models import MetricSnapshot, Scorecard

TREND_DAYS = 30
# a metric's status and a verdict, in the colour words of vx11_site.display
METRIC_COLOURS: dict[str, str] = {
    MetricSnapshot.Status.OK: STATUS_COLOURS["passed"],
    MetricSnapshot.Status.FAIL: STATUS_COLOURS["failed"],
    MetricSnapshot.Status.DEFERRED: STATUS_COLOURS["retrying"],
    MetricSnapshot.Status.NV: STATUS_COLOURS["unknown"],
}
VERDICT_COLOURS: dict[str, str] = {
    Scorecard.Verdict.OPERATIONAL: STATUS_COLOURS["passed"],
    Scorecard.Verdict.DEGRADED: STATUS_COLOURS["retrying"],
    Scorecard.Verdict.CRITICAL: STATUS_COLOURS["failed"],
}
MAX_DOTS = 60  # beyond this many scorecards in a trend, only the dots that say something (see trend_svg)
NOT_INDEXED = "not indexed"  # a path no Evidence row covers: nothing has checked it
DATABASE = "database rows"  # evidence read from the portal's database ("db:app.Model ...")


def shown(value: float | None) -> str:
    """A percentage as the page prints it: at most two decimals, or NV when there is no value."""
    if value is None:
        return "NV"
    return f"{round(value, 2):g}"


@dataclass
class EvidenceState:
    """Where a value's evidence is and what the evidence index says about it."""

    path: str
    row: Evidence | None

    @property
    def state(self) -> str:
        if self.row is not None:
            return self.row.state
        # rows of the portal's own database, not a file: the numbers read are kept in the scorecard's bag
        return DATABASE if self.path.startswith("db:") else NOT_INDEXED

    @property
    def verified(self) -> bool:
        return self.row is not None and self.row.state == Evidence.VALID

    def html(self) -> SafeString:
        if not self.path:
            return mark_safe('<span class="vx11-evidence" data-state="none">no evidence path</span>')
        colour = STATUS_COLOURS.get(self.state, NEUTRAL)
        label = format_html(
            '<span class="vx11-evidence-state" data-state="{}" style="background:{};color:#fff;padding:1px 6px;'
            'border-radius:8px;font-size:11px">{}</span>',
            self.state,
            colour,
            "verified" if self.verified else self.state,
        )
        if self.row is None:
            return format_html('<span class="vx11-evidence"><code>{}</code> {}</span>', self.path, label)
        link = reverse("admin:evidence_evidence_change", args=[self.row.pk])
        return format_html(
            '<span class="vx11-evidence"><a href="{}"><code>{}</code></a> {}</span>', link, self.path, label
        )


@dataclass
class Card:
    metric: MetricSnapshot
    evidence: EvidenceState
    trend: list[tuple] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def value(self) -> str:
        return shown(self.metric.value)

    @property
    def unit(self) -> str:
        return "" if self.metric.value is None else "%"

    @property
    def colour(self) -> str:
        return METRIC_COLOURS.get(self.metric.status, NEUTRAL)

    @property
    def anchor(self) -> str:
        return f"calc-{self.metric.name}"

    def chart(self) -> SafeString:
        return trend_svg(self.metric.name, self.trend, now=self.metric.scorecard.generated_at)


def relative(path: str) -> str:
    """An evidence path relative to VX11_EVIDENCE_ROOT, the way Evidence rows store it."""
    root = str(Path(settings.VX11_EVIDENCE_ROOT).resolve())
    path = path.strip()
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.strip("/") if not Path(path).is_absolute() else path


def evidence_states(paths: list[str]) -> dict[str, EvidenceState]:
    """The Evidence row covering each path (the bag itself, or the bag a file inside it belongs to), one query."""
    prefixes: dict[str, list[str]] = {}
    for path in filter(None, paths):
        parts = Path(relative(path)).parts
        prefixes[path] = ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]  # the longest first
    wanted = {prefix for candidates in prefixes.values() for prefix in candidates}
    rows = {row.path: row for row in Evidence.objects.filter(path__in=wanted)} if wanted else {}
    states = {}
    for path in paths:
        row = next((rows[p] for p in prefixes.get(path, []) if p in rows), None)
        states[path] = EvidenceState(path, row)
    return states


def _dot(at: datetime, value: float | None, status: str, cx: float, cy: float) -> SafeString:
    """One scorecard on a trend: filled in its status colour, hollow when there is no value."""
    colour = METRIC_COLOURS.get(status, NEUTRAL)
    return format_html(
        '<circle class="vx11-point" data-status="{}" cx="{}" cy="{}" r="2.5" fill="{}" stroke="{}">'
        "<title>{}: {} ({})</title></circle>",
        status,
        f"{cx:.1f}",
        f"{cy:.1f}",
        "#fff" if value is None else colour,
        colour,
        timezone.localtime(at).isoformat(timespec="seconds"),
        shown(value),
        status,
    )


def trend_svg(name: str, points: list[tuple], now: datetime, width: int = 240, height: int = 64) -> SafeString:
    """One metric's trend over TREND_DAYS days ending at `now`, on a fixed 0-100 scale: a line through the values,
    one dot per scorecard coloured by its status; an NV or deferred scorecard is a hollow dot on the baseline and
    breaks the line, so a missing value never reads as 0. `data-points` counts every scorecard drawn."""
    pad = 4
    start = now - timedelta(days=TREND_DAYS)
    span = (now - start).total_seconds()

    def x(at: datetime) -> float:
        return pad + max(0.0, min(1.0, (at - start).total_seconds() / span)) * (width - 2 * pad)

    def y(value: float) -> float:
        return height - pad - max(0.0, min(100.0, value)) / 100 * (height - 2 * pad)

    segments: list[list[str]] = [[]]
    dots = []
    dense = len(points) > MAX_DOTS
    for i, (at, value, status) in enumerate(points):
        if value is None:
            segments.append([])
        else:
            segments[-1].append(f"{x(at):.1f},{y(value):.1f}")
        # a month of hourly snapshots would be hundreds of dots per chart: then the line carries the ok values
        # and only what differs (fail, NV, deferred), a lone value and the latest get a dot
        alone = (i == 0 or points[i - 1][1] is None) and (i == len(points) - 1 or points[i + 1][1] is None)
        if dense and status == MetricSnapshot.Status.OK and not alone and i != len(points) - 1:
            continue
        dots.append(_dot(at, value, status, x(at), y(0 if value is None else value)))
    lines = format_html_join(
        "",
        '<polyline fill="none" stroke="#0969da" stroke-width="1.2" points="{}"/>',
        ((" ".join(segment),) for segment in segments if len(segment) > 1),
    )
    guides = format_html(
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ccc"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#eee"/>',
        pad,
        y(0),
        width - pad,
        y(0),
        pad,
        y(100),
        width - pad,
        y(100),
    )
    return format_html(
        '<svg class="vx11-trend" data-metric="{}" data-points="{}" role="img" '
        'aria-label="{}: {} scorecards in {} days" width="{}" height="{}" viewBox="0 0 {} {}" '
        'style="background:#fafafa;border:1px solid #ddd">{}{}{}</svg>',
        name,
        len(points),
        name,
        len(points),
        TREND_DAYS,
        width,
        height,
        width,
        height,
        guides,
        lines,
        mark_safe("".join(dots)),  # each dot was escaped by format_html in _dot
    )


def decision_rows(logic: dict) -> list[tuple[str, str, str | None]]:
    """The verdict's decision logic as (check, value, colour) rows: a true check green, a false one red."""
    rows: list[tuple[str, str, str | None]] = []
    for key, value in (logic or {}).items():
        if isinstance(value, bool):
            rows.append((key, "yes" if value else "no", STATUS_COLOURS["passed" if value else "failed"]))
        elif isinstance(value, dict | list):
            rows.append((key, _compact(value), None))
        else:
            rows.append((key, "NV" if value is None else str(value), None))
    return rows


def _compact(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_compact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_compact(v) for v in value)
    return "NV" if value is None else str(value)


def board(scorecard: Scorecard | None) -> dict:
    """The page's context for one scorecard (None: the empty state); each trend ends at the scorecard."""
    if scorecard is None:
        return {"scorecard": None, "cards": []}
    metrics = list(scorecard.metrics.order_by("id"))
    states = evidence_states([m.evidence_path for m in metrics] + [scorecard.evidence_path])
    logic = dict(scorecard.decision_logic or {})
    # the written-out rule and its application are sentences of their own; the rest are the checks
    checks = {key: value for key, value in logic.items() if key not in ("rules", "because")}
    cards = []
    for metric in metrics:
        metric.scorecard = scorecard  # the trend ends at this scorecard; no query per card to fetch it again
        trend = Scorecard.trend(metric.name, days=TREND_DAYS, now=scorecard.generated_at)
        cards.append(Card(metric, states[metric.evidence_path], trend))
    return {
        "scorecard": scorecard,
        "cards": cards,
        "verdict_colour": VERDICT_COLOURS.get(scorecard.verdict, NEUTRAL),
        "decision": decision_rows(checks),
        "rules": logic.get("rules", ""),
        "because": logic.get("because", ""),
        "bag": states[scorecard.evidence_path],
        "trend_days": TREND_DAYS,
        "is_latest": Scorecard.latest() == scorecard,
    }
