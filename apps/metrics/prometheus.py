"""Prometheus `/metrics`: the fleet, flows, daughters, power, the event bus and the latest scorecard.

Everything is read from the database at scrape time by one custom collector, registered on a registry made
for that scrape: no process keeps counters of its own, so every web process answers the same figures and a
restart loses nothing. Stored rows are pruned by age, so their counts are gauges, never counters.

The number of queries is fixed (aggregates, one row set per table at most), whatever the fleet's size.
Labels stay bounded: module slugs, flow names, metric names and the choices of a status field; never a
daughter, a run or an event.

Access: with VX11_METRICS_KEY set, a scrape gives it as `Authorization: Bearer <key>` or `X-Metrics-Key`.
Unset, only loopback clients get an answer, and never through a proxy (a forwarded request is refused,
since behind a local proxy every client would look like loopback).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, OuterRef, Q, Subquery
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.daughters.models import Daughter, DaughterTask
from apps.events.models import RELAY_GRACE, Event
from apps.fleet.models import HealthCheck, Module, Outcome, State
from apps.flows.models import Flow, FlowRun
from apps.power.models import PowerAction

from .models import MetricSnapshot, Scorecard

# a metric with one of these statuses has no number behind it: its sample is left out, never shown as 0
WITHOUT_VALUE = (MetricSnapshot.Status.NV, MetricSnapshot.Status.DEFERRED)
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _seconds(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


class PortalCollector(Collector):
    """Reads the portal's state when Prometheus scrapes; `now` is for tests (default: the scrape's time)."""

    def __init__(self, now: datetime | None = None):
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        yield from self.fleet(now)
        yield from self.flows()
        yield from self.daughters()
        yield from self.power()
        yield from self.events(now)
        yield from self.scorecard()

    def fleet(self, now: datetime) -> Iterator[Metric]:
        """Per enabled module: its state, last latency, last check and 24 h uptime; the probe rounds."""
        modules = list(
            Module.objects.filter(enabled=True)
            .order_by("slug")
            .values("id", "slug", "state", "last_outcome", "last_latency_ms", "last_checked_at", "uptime_24h")
        )
        state = _gauge(
            "vx11_module_state", "1 for the state an enabled module is in, 0 for the others", ["module", "state"]
        )
        latency = _gauge("vx11_module_last_latency_seconds", "latency of the module's last answered probe", ["module"])
        checked = _gauge("vx11_module_last_check_timestamp_seconds", "when the module was last probed", ["module"])
        uptime = _gauge("vx11_module_uptime_24h_percent", "share of the last 24 h's checks that passed", ["module"])
        for row in modules:
            for value in State.values:
                state.add_metric([row["slug"], value], 1.0 if row["state"] == value else 0.0)
            if row["last_latency_ms"] is not None:
                latency.add_metric([row["slug"]], row["last_latency_ms"] / 1000.0)
            if row["last_checked_at"] is not None:
                checked.add_metric([row["slug"]], row["last_checked_at"].timestamp())
            if row["uptime_24h"] is not None:
                uptime.add_metric([row["slug"]], row["uptime_24h"])
        yield from (state, latency, checked, uptime)
        yield from self.probe_rounds(now, [r for r in modules if r["last_checked_at"]])

    def probe_rounds(self, now: datetime, checked: list[dict]) -> Iterator[Metric]:
        """No row stores a round as such: a round stores one HealthCheck per enabled module, stamped when that
        module's answer came, and folds it into the module's last_* fields. So the latest round is the modules'
        last checks within one probe interval of the newest; its duration the span from its first to its last
        answer (a lower bound: the time to the first answer is not stored); and the rounds of the last hour are
        the checks of the newest round's last module (an index range, not a scan of the whole fleet's hour)."""
        newest = max(checked, key=lambda r: r["last_checked_at"], default=None)
        interval = timedelta(seconds=settings.VX11_PROBE_INTERVAL_SECONDS)
        latest_round = (
            [r for r in checked if newest["last_checked_at"] - r["last_checked_at"] < interval] if newest else []
        )
        last_at = _gauge("vx11_probe_last_round_timestamp_seconds", "when the latest probe round stored its last check")
        duration = _gauge(
            "vx11_probe_last_round_duration_seconds",
            "first to last answer of the latest probe round (a lower bound of its duration)",
        )
        probed = _gauge("vx11_probe_last_round_modules", "enabled modules checked in the latest probe round")
        outcomes = _gauge(
            "vx11_probe_last_round_outcomes", "modules of the latest probe round by their result", ["outcome"]
        )
        rounds = _gauge("vx11_probe_rounds_last_hour", "probe rounds in the last hour (one check per module each)")
        per_outcome = dict.fromkeys(Outcome.values, 0)
        for row in latest_round:
            if row["last_outcome"] in per_outcome:
                per_outcome[row["last_outcome"]] += 1
        for outcome, count in per_outcome.items():
            outcomes.add_metric([outcome], count)
        probed.add_metric([], len(latest_round))
        if newest is not None:
            first = min(r["last_checked_at"] for r in latest_round)
            last_at.add_metric([], newest["last_checked_at"].timestamp())
            duration.add_metric([], (newest["last_checked_at"] - first).total_seconds())
            hour = HealthCheck.objects.filter(
                module_id=newest["id"], checked_at__gt=now - timedelta(hours=1), checked_at__lte=now
            )
            rounds.add_metric([], hour.count())
        else:
            rounds.add_metric([], 0)
        yield from (last_at, duration, probed, outcomes, rounds)

    def flows(self) -> Iterator[Metric]:
        """The latest finished run of each enabled flow (its result, duration and end), and stored runs by status."""
        finished = FlowRun.objects.filter(
            flow=OuterRef("pk"), status__in=[FlowRun.Status.PASSED, FlowRun.Status.FAILED]
        )
        latest = finished.order_by("-started_at", "-id")
        # one query: each flow with its latest finished run's fields as correlated subqueries (index flow, -started_at)
        flows = (
            Flow.objects.filter(enabled=True)
            .order_by("name")
            .annotate(
                last_status=Subquery(latest.values("status")[:1]),
                last_duration_ms=Subquery(latest.values("duration_ms")[:1]),
                last_finished_at=Subquery(latest.values("finished_at")[:1]),
            )
            .values("name", "last_status", "last_duration_ms", "last_finished_at")
        )
        passed = _gauge(
            "vx11_flow_last_run_passed", "1 when an enabled flow's latest finished run passed, else 0", ["flow"]
        )
        duration = _gauge("vx11_flow_last_run_duration_seconds", "duration of the flow's latest finished run", ["flow"])
        ended = _gauge("vx11_flow_last_run_timestamp_seconds", "when the flow's latest finished run ended", ["flow"])
        by_result = {FlowRun.Status.PASSED.value: 0, FlowRun.Status.FAILED.value: 0, "never": 0}
        for row in flows:
            if row["last_status"] is None:
                by_result["never"] += 1
                continue
            by_result[row["last_status"]] += 1
            passed.add_metric([row["name"]], 1.0 if row["last_status"] == FlowRun.Status.PASSED else 0.0)
            if row["last_duration_ms"] is not None:
                duration.add_metric([row["name"]], row["last_duration_ms"] / 1000.0)
            if row["last_finished_at"] is not None:
                ended.add_metric([row["name"]], row["last_finished_at"].timestamp())
        latest_results = _gauge(
            "vx11_flows_by_last_result", "enabled flows by their latest finished run: passed, failed, never", ["result"]
        )
        for result, count in by_result.items():
            latest_results.add_metric([result], count)
        yield from (passed, duration, ended, latest_results)
        yield self._counts(
            "vx11_flow_runs", "stored flow runs by status (pruned by age)", "status", FlowRun, "status", FlowRun.Status
        )

    def daughters(self) -> Iterator[Metric]:
        yield self._counts(
            "vx11_daughters",
            "stored daughters by status (pruned by age)",
            "status",
            Daughter,
            "status",
            Daughter.Status,
        )
        yield self._counts(
            "vx11_daughter_tasks",
            "stored daughter tasks by status (pruned by age)",
            "status",
            DaughterTask,
            "status",
            DaughterTask.Status,
        )

    def power(self) -> Iterator[Metric]:
        yield self._counts(
            "vx11_power_actions",
            "stored power requests by result (pruned by age)",
            "result",
            PowerAction,
            "result",
            PowerAction.Result,
        )

    def events(self, now: datetime) -> Iterator[Metric]:
        """The bus's outbox: an event stays unsent until the channel layer has it; one still unsent after the
        relay's grace was not sent by its publisher (the layer failed or was skipped) and waits for the relay."""
        unsent = Q(sent_at__isnull=True)
        totals = Event.objects.aggregate(
            stored=Count("id"),
            unsent=Count("id", filter=unsent),
            failed=Count("id", filter=unsent & Q(timestamp__lt=now - RELAY_GRACE)),
            oldest_unsent=Min("timestamp", filter=unsent),
        )
        sent = _gauge("vx11_events_sent", "stored events handed to the channel layer (pruned by age)")
        sent.add_metric([], totals["stored"] - totals["unsent"])
        pending = _gauge("vx11_events_unsent", "stored events not handed to the channel layer yet")
        pending.add_metric([], totals["unsent"])
        failed = _gauge(
            "vx11_events_send_failed", "unsent events older than the relay's grace: their publisher's send failed"
        )
        failed.add_metric([], totals["failed"])
        oldest = _gauge("vx11_events_oldest_unsent_age_seconds", "age of the oldest unsent event (absent: none)")
        if totals["oldest_unsent"] is not None:
            oldest.add_metric([], max(0.0, (now - totals["oldest_unsent"]).total_seconds()))
        yield from (sent, pending, failed, oldest)

    def scorecard(self) -> Iterator[Metric]:
        """Each metric of the latest scorecard. An NV or deferred metric has no sample in vx11_scorecard_metric
        (0 would be a number no evidence supports); its status says why it is missing."""
        latest = Scorecard.latest()
        value = _gauge(
            "vx11_scorecard_metric", "a metric of the latest scorecard, 0-100 (absent: NV or deferred)", ["name"]
        )
        status = _gauge(
            "vx11_scorecard_metric_status", "1 with each metric's status: ok, fail, NV, deferred", ["name", "status"]
        )
        verdict = _gauge(
            "vx11_scorecard_verdict", "1 for the latest scorecard's verdict, 0 for the others", ["verdict"]
        )
        generated = _gauge("vx11_scorecard_timestamp_seconds", "when the latest scorecard was computed")
        if latest is not None:
            for row in latest.metrics.order_by("name").values("name", "value", "status"):
                status.add_metric([row["name"], row["status"]], 1.0)
                if row["value"] is not None and row["status"] not in WITHOUT_VALUE:
                    value.add_metric([row["name"]], row["value"])
            for choice in Scorecard.Verdict.values:
                verdict.add_metric([choice], 1.0 if latest.verdict == choice else 0.0)
            generated.add_metric([], latest.generated_at.timestamp())
        yield from (value, status, verdict, generated)

    @staticmethod
    def _counts(name: str, documentation: str, label: str, model, field: str, choices) -> GaugeMetricFamily:
        """Rows per value of a choice field, in one GROUP BY; every choice gets a sample, 0 when absent."""
        counts = dict.fromkeys(choices.values, 0)
        for row in model.objects.values(field).annotate(n=Count("pk")).order_by():
            counts[row[field]] = row["n"]
        family = _gauge(name, documentation, [label])
        for value, count in counts.items():
            family.add_metric([value], count)
        return family


def render(now: datetime | None = None) -> bytes:
    """The text exposition of the portal's figures, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector(now))
    return generate_latest(registry)


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _given_key(request) -> str | None:
    header = request.headers.get("X-Metrics-Key")
    if header:
        return header
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def refusal(request) -> JsonResponse | None:
    """Why this scrape is refused (401 no key, 403 wrong key or not loopback), or None to answer it."""
    key = settings.VX11_METRICS_KEY
    if key:
        given = _given_key(request)
        if given is None:
            response = JsonResponse(
                {"detail": "this endpoint needs VX11_METRICS_KEY: send 'Authorization: Bearer <key>' or X-Metrics-Key"},
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="vx11-metrics"'
            return response
        if not hmac.compare_digest(given.encode(), key.encode()):
            return JsonResponse({"detail": "wrong metrics key"}, status=403)
        return None
    if any(request.META.get(h) for h in FORWARDING_HEADERS):
        return JsonResponse(
            {"detail": "VX11_METRICS_KEY is not set: /metrics answers direct loopback clients only, not via a proxy"},
            status=403,
        )
    if not _loopback(request.META.get("REMOTE_ADDR", "")):
        return JsonResponse(
            {"detail": "VX11_METRICS_KEY is not set: /metrics answers loopback clients only; set the key to scrape"},
            status=403,
        )
    return None


@csrf_exempt  # a scraper holds no CSRF token; only GET and HEAD are answered anyway
@require_safe
def metrics_view(request):
    """GET /metrics: thin; the guard, then the collector's figures in the text format."""
    refused = refusal(request)
    if refused is not None:
        return refused
    # every name and label here is a classic one, so the 0.0.4 text format is exact and every Prometheus reads it
    return HttpResponse(render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


__all__ = ["PortalCollector", "render", "refusal", "metrics_view"]
