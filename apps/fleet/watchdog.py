"""Is the portal's scheduler alive? Beat and the worker's probe rounds, watched from the web process.

Two signals, each stalled when older than STALL_INTERVALS of its interval:

- beat: django-celery-beat stamps PeriodicTask.last_run_at on every task it sends (CELERY_BEAT_SYNC_EVERY = 1
  makes it write at once, not every 3 minutes). Its interval is the shortest enabled interval entry, but
  never under beat's own longest sleep (DEFAULT_MAX_INTERVAL): beat only writes when it sends.
- probe rounds: the newest HealthCheck (each round stores one per enabled module); the interval is that of
  the enabled probe entry. A manual "Probe now" counts as a round too.

A signal with nothing to watch (no enabled interval entry; no enabled probe entry or no enabled module) is
"off". An old timestamp is not a stall until this process has watched for STALL_INTERVALS of the interval:
a portal started again after a long stop has its beat and worker starting too.

Who tells: a thread of the web process (Watchdog, started by vx11_site.asgi with the first HTTP request),
every VX11_WATCHDOG_SECONDS. Not beat, which is what dies, nor a beat task, nor the worker: when the worker
is the one that died, the probe rounds stop and someone must still say so. The web process needs neither,
and when it dies /health stops answering, which whoever polls it sees. SchedulerWatch.observe turns a stall
and its end into one portal StateChange each (module None), which goes to every notification channel; the
notification sweep is itself a beat task, so while a stall lasts the watchdog sends the deliveries itself
(the same claims as the sweep's: nothing goes out twice).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DEFAULT_MAX_INTERVAL

from . import notify
from .models import HealthCheck, Module, SchedulerWatch

log = logging.getLogger(__name__)

STALL_INTERVALS = 3
PROBE_TASK = "apps.fleet.tasks.probe_fleet"
BEAT_MAX_SLEEP = timedelta(seconds=DEFAULT_MAX_INTERVAL)  # the DatabaseScheduler wakes up at least this often
# when this process began to watch (its first look at the clock): the grace of a fresh start
STARTED = timezone.now()


@dataclass(frozen=True)
class Signal:
    """One watched timestamp at the moment `now`."""

    name: str
    last: datetime | None
    interval: timedelta | None  # None: nothing to watch
    now: datetime
    started: datetime

    @property
    def status(self) -> str:
        if self.interval is None:
            return "off"
        since = max(self.last, self.started) if self.last else self.started
        return "stalled" if self.now - since > STALL_INTERVALS * self.interval else "ok"

    @property
    def age_seconds(self) -> float | None:
        return None if self.last is None else round((self.now - self.last).total_seconds(), 1)

    def as_dict(self) -> dict:
        interval = None if self.interval is None else self.interval.total_seconds()
        return {"status": self.status, "age_seconds": self.age_seconds, "interval_seconds": interval}

    def describe(self) -> str:
        what = {"beat": "beat sent no task", "probe_rounds": "no probe round stored"}[self.name]
        when = "since this process started" if self.last is None else f"for {self.age_seconds:g} s"
        return f"{what} {when} (over {STALL_INTERVALS} × {self.interval.total_seconds():g} s)"


def _interval(schedule: IntervalSchedule) -> timedelta:
    return timedelta(**{schedule.period: schedule.every})


def beat(now: datetime, started: datetime) -> Signal:
    enabled = PeriodicTask.objects.filter(enabled=True)
    intervals = [_interval(s) for s in IntervalSchedule.objects.filter(periodictask__enabled=True).distinct()]
    last = enabled.aggregate(m=Max("last_run_at"))["m"]
    return Signal("beat", last, max(min(intervals), BEAT_MAX_SLEEP) if intervals else None, now, started)


def probe_rounds(now: datetime, started: datetime) -> Signal:
    entries = PeriodicTask.objects.filter(task=PROBE_TASK, enabled=True, interval__isnull=False)
    intervals = [_interval(e.interval) for e in entries.select_related("interval")]
    if not intervals or not Module.objects.filter(enabled=True).exists():
        return Signal("probe_rounds", None, None, now, started)
    return Signal("probe_rounds", HealthCheck.objects.aggregate(m=Max("checked_at"))["m"], min(intervals), now, started)


def status(now: datetime | None = None, started: datetime | None = None) -> list[Signal]:
    """Beat and probe rounds as of `now`; `started` is when watching began (default: this process's start)."""
    now = now or timezone.now()
    started = started or STARTED
    return [beat(now, started), probe_rounds(now, started)]


def problem(signals: list[Signal]) -> str:
    """What is stalled, for people: "" when nothing is."""
    return "; ".join(s.describe() for s in signals if s.status == "stalled")


def check(now: datetime | None = None, started: datetime | None = None) -> dict:
    """One look: record a new stall or a recovery (SchedulerWatch, once each), and while stalled send the
    notifications that the beat-driven sweep cannot."""
    now = now or timezone.now()
    found = problem(status(now, started))
    change = SchedulerWatch.observe(found, now)
    result = {"problem": found, "change": change.reason if change else None}
    if found or change:
        result.update(notify.claim_state_changes(now))
        result.update(notify.send_due(now))
    return result


class Watchdog:
    """The thread that calls check() every VX11_WATCHDOG_SECONDS in this process (one per process)."""

    thread: threading.Thread | None = None
    lock = threading.Lock()

    @classmethod
    def ensure_running(cls) -> None:
        if cls.thread is not None or settings.VX11_WATCHDOG_SECONDS <= 0:
            return
        with cls.lock:
            if cls.thread is None:
                every = settings.VX11_WATCHDOG_SECONDS
                cls.thread = threading.Thread(target=cls.run, args=(every,), name="vx11-watchdog", daemon=True)
                cls.thread.start()

    @staticmethod
    def run(every: float) -> None:
        while True:  # a daemon thread: it ends with the process
            close_old_connections()
            try:
                result = check()
                if result["change"]:
                    log.warning("%s", result["change"])
            except Exception:
                log.exception("watchdog: the check failed; trying again in %g s", every)
            time.sleep(every)
