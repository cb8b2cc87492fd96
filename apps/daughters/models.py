"""Madre's daughters: short-lived child tasks, run on Celery workers, kept in the database.

The real madre kept its daughters in memory only, so nothing noticed a dead one. Here every
daughter is a row with its lifecycle:

    spawned ──dispatch──► (queued to a worker) ──claim──► running ──► finished
                                                             │ error / no heartbeat
                                                             ├──► mutated (mutation_level + 1) ──► queued again
                                                             └──► failed (retries exhausted)
    any live state ──► expired (TTL since the first start)   any live state ──► killed (cancel)

At most VX11_DAUGHTER_MAX_RUNNING daughters are handed to workers at once; the rest wait in
the table, ordered by priority (shub > operator > madre > daughters) then age. A worker claims
a daughter with a conditional UPDATE on (status, mutation_level), so a message delivered twice
(acks_late after a lost worker) runs the daughter once. The reaper works in set-based UPDATEs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, models, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from apps.events.models import publish
from vx11_site import display
from vx11_site.db import bulk_set, prune_in_chunks
from vx11_site.permissions import require

log = logging.getLogger(__name__)

PRIORITIES = {"shub": 0, "operator": 1, "madre": 2, "daughters": 3}  # lower runs first, as madre's queue
EVENT_ID_LIMIT = 200  # ids listed in one aggregated event
HOST = socket.gethostname()[:255]  # as DaughterAttempt.host stores it
ATTEMPT_ENV = "VX11_DAUGHTER_ATTEMPT"  # in a command's environment: which attempt it belongs to (orphan checks)
TASK_EVENTS_ONE_BY_ONE = 10  # more changed tasks than this get one aggregated plan_updated event


# --- the task and its daughters -----------------------------------------------------------------


class DaughterTask(models.Model):
    """What madre was asked to do; its daughters do the work. Status follows the daughters."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PLANNING = "planning"
        RUNNING = "running"
        RETRYING = "retrying"
        COMPLETED = "completed"
        FAILED = "failed"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    class Source(models.TextChoices):
        SHUB = "shub"
        OPERATOR = "operator"
        MADRE = "madre"
        DAUGHTERS = "daughters"

    FINAL = (Status.COMPLETED, Status.FAILED, Status.EXPIRED, Status.CANCELLED)

    intent_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MADRE)
    priority = models.PositiveSmallIntegerField(help_text="0 shub, 1 operator, 2 madre, 3 daughters; lower runs first")
    task_type = models.CharField(max_length=5, choices=[("short", "short"), ("long", "long")], default="short")
    description = models.CharField(max_length=500, blank=True)
    max_retries = models.PositiveSmallIntegerField(default=2)
    plan = models.JSONField(default=dict, blank=True, help_text="the daughters asked for, as spawned")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(default=timezone.now)
    idempotency_key = models.CharField(
        max_length=255,
        blank=True,
        editable=False,
        help_text="the spawning client's Idempotency-Key: its retries get this task (cleared after "
        "VX11_DAUGHTER_IDEMPOTENCY_HOURS)",
    )
    request_fingerprint = models.CharField(
        max_length=64, blank=True, editable=False, help_text="SHA-256 of the spawn request the key came with"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            # admin and API lists filtered by status, newest first; prune() by age of finished tasks
            models.Index(fields=["status", "created"], name="dtask_status_created"),
            # forget_idempotency_keys(): the keyed tasks by age (only they are in it)
            models.Index(fields=["created"], condition=~Q(idempotency_key=""), name="dtask_idempotency_age"),
        ]
        constraints = [
            # one task per user and key, whatever the number of concurrent requests carrying it
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"], condition=~Q(idempotency_key=""), name="dtask_idempotency_key"
            ),
        ]
        permissions = [("spawn_daughter", "Can spawn daughters (API, admin, CLI)")]

    def __str__(self) -> str:
        return f"task #{self.pk} {self.description or self.source} ({self.status})"

    @classmethod
    def spawn(
        cls,
        kind: str,
        params: dict,
        *,
        source: str = "madre",
        description: str = "",
        ttl_seconds: int | None = None,
        max_retries: int | None = None,
        name: str = "",
        purpose: str = "",
        count: int = 1,
        user=None,
        intent_id: str = "",
        priority: int | None = None,
        parent_id: int | None = None,
        idempotency_key: str = "",
        request_fingerprint: str = "",
    ) -> DaughterTask:
        """Create a task with `count` daughters of one kind and queue them (after commit); its plan_updated event is
        stored with it. `parent_id`: the daughter that asked for these (a daughter spawning daughters).
        `idempotency_key`: see spawn_once(); a second task with the user's key raises IntegrityError."""
        if source not in PRIORITIES:
            raise ValidationError({"source": f"source must be one of {', '.join(PRIORITIES)}"})
        ttl = settings.VX11_DAUGHTER_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= 86400:
            raise ValidationError({"ttl_seconds": "ttl_seconds must be between 1 and 86400"})
        if not 1 <= count <= 1000:
            raise ValidationError({"count": "count must be between 1 and 1000"})
        retries = settings.VX11_DAUGHTER_MAX_RETRIES if max_retries is None else max_retries
        if not 0 <= retries <= 10:
            raise ValidationError({"max_retries": "max_retries must be between 0 and 10"})
        from .kinds import validate_params

        params = validate_params(kind, params)
        if parent_id is not None and not Daughter.objects.filter(pk=parent_id).exists():
            raise ValidationError({"parent_id": f"no daughter #{parent_id}"})
        priority = PRIORITIES[source] if priority is None else priority
        name = name or kind
        with transaction.atomic():
            task = cls.objects.create(
                intent_id=intent_id,
                source=source,
                priority=priority,
                description=description[:500],
                max_retries=retries,
                plan={
                    "daughters": [{"name": name, "kind": kind, "params": params, "ttl_seconds": ttl, "count": count}]
                },
                created_by=user if getattr(user, "pk", None) else None,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
            )
            Daughter.objects.bulk_create(
                Daughter(
                    task=task,
                    name=name if count == 1 else f"{name}-{i + 1}",
                    purpose=purpose[:300] or description[:300],
                    kind=kind,
                    params=params,
                    ttl_seconds=ttl,
                    max_retries=retries,
                    priority=priority,
                    parent_id=parent_id,
                )
                for i in range(count)
            )
            transaction.on_commit(Daughter.dispatch)
            task.announce()
        return task

    @classmethod
    def spawn_once(cls, idempotency_key: str, kind: str, params: dict, *, user, **options) -> tuple[DaughterTask, bool]:
        """spawn() for a client that may retry: the first request with a key makes the task (True); a request of
        the same user with the same key within VX11_DAUGHTER_IDEMPOTENCY_HOURS gets that task back (False), even
        while the first is still being stored: the unique (created_by, idempotency_key) lets one insert win and
        the others read its task. The same key with a different request is a ValidationError."""
        if not getattr(user, "pk", None):
            raise ValidationError({"idempotency_key": "an Idempotency-Key needs an authenticated user"})
        request = json.dumps({"kind": kind, "params": params, **options}, sort_keys=True, default=str)
        fingerprint = hashlib.sha256(request.encode()).hexdigest()
        cutoff = timezone.now() - timedelta(hours=settings.VX11_DAUGHTER_IDEMPOTENCY_HOURS)
        mine = cls.objects.filter(created_by=user, idempotency_key=idempotency_key)
        mine.filter(created__lt=cutoff).update(idempotency_key="", request_fingerprint="")  # past its window: new
        for _ in range(2):
            try:
                with transaction.atomic():  # SQLite: an IMMEDIATE transaction, so look-up and insert are one step
                    task = mine.first()
                    if task is None:
                        task = cls.spawn(
                            kind,
                            params,
                            user=user,
                            idempotency_key=idempotency_key,
                            request_fingerprint=fingerprint,
                            **options,
                        )
                        return task, True
            except IntegrityError:  # PostgreSQL: a concurrent request with the key committed its task first
                continue
            if task.request_fingerprint != fingerprint:
                raise ValidationError(
                    {
                        "idempotency_key": (
                            f"Idempotency-Key {idempotency_key!r} was already used for a different request "
                            f"(task #{task.pk}); use a new key for a new request"
                        )
                    }
                )
            return task, False
        raise ValidationError({"idempotency_key": f"Idempotency-Key {idempotency_key!r} is in use by another request"})

    @classmethod
    def forget_idempotency_keys(cls, now=None) -> int:
        """A key is honoured VX11_DAUGHTER_IDEMPOTENCY_HOURS after its task was made; then it may make a new task."""
        cutoff = (now or timezone.now()) - timedelta(hours=settings.VX11_DAUGHTER_IDEMPOTENCY_HOURS)
        keyed = cls.objects.filter(created__lt=cutoff).exclude(idempotency_key="")
        return keyed.update(idempotency_key="", request_fingerprint="")

    @staticmethod
    def require_spawn_permission(user, kind: str) -> None:
        """Spawning needs daughters.spawn_daughter, plus what the kind asks for (a `flow` daughter runs a flow:
        flows.run_flow); checked by the API, the admin and the CLI, not by spawn(), which the portal calls itself."""
        from .kinds import KIND_PERMISSIONS

        extra = KIND_PERMISSIONS.get(kind, ())
        what = f"spawning a {kind} daughter" if extra else "spawning a daughter"
        require(user, what, "daughters.spawn_daughter", *extra)

    def cancel(self, user=None) -> int:
        """Kill every live daughter of the task (workers stop at their next heartbeat)."""
        return Daughter.kill(self.daughters.all(), user=user)

    def announce(self) -> None:
        counts = dict(self.daughters.values_list("status").annotate(n=Count("id")))
        publish("plan_updated", {"task_id": self.pk, "status": self.status, "source": self.source, "daughters": counts})

    @classmethod
    def refresh_statuses(cls, task_ids, chunk: int = 5000) -> list[int]:
        """Derive each task's status from its daughters' (one grouped query per chunk of tasks, so a
        sweep over 100,000 tasks stays under SQLite's bound on query parameters); return the changed ids."""
        task_ids = sorted(set(task_ids))
        changed = []
        for lo in range(0, len(task_ids), chunk):
            ids = task_ids[lo : lo + chunk]
            counts: dict[int, dict[str, int]] = {}
            with transaction.atomic():  # the tasks' rows are locked before their daughters are counted,
                # so two processes refreshing one task write in turn, the later with the later counts
                # (PostgreSQL: FOR UPDATE; SQLite: the IMMEDIATE transaction)
                locked = list(cls.objects.select_for_update().filter(id__in=ids).order_by("id").only("id", "status"))
                for task_id, status, n in (
                    Daughter.objects.filter(task_id__in=ids)
                    .values_list("task_id", "status")
                    .annotate(n=Count("id"))
                    .order_by()
                ):
                    counts.setdefault(task_id, {})[status] = n
                now = timezone.now()
                tasks = []
                for task in locked:
                    status = cls.status_from(counts.get(task.id, {}))
                    if status != task.status:
                        task.status, task.updated = status, now
                        tasks.append(task)
                bulk_set(tasks, ["status", "updated"])
            changed += [t.id for t in tasks]
        return changed

    @classmethod
    def status_from(cls, counts: dict[str, int]) -> str:
        S, D = cls.Status, Daughter.Status
        if counts.get(D.RUNNING):
            return S.RUNNING
        if counts.get(D.MUTATED) or counts.get(D.RESTARTING):
            return S.RETRYING
        if counts.get(D.SPAWNED):
            return S.RUNNING if any(counts.get(s) for s in Daughter.FINAL) else S.PENDING
        for daughter_status, task_status in ((D.FAILED, S.FAILED), (D.EXPIRED, S.EXPIRED), (D.KILLED, S.CANCELLED)):
            if counts.get(daughter_status):
                return task_status
        return S.COMPLETED

    @classmethod
    def announce_changes(cls, task_ids: list[int]) -> None:
        if len(task_ids) <= TASK_EVENTS_ONE_BY_ONE:
            for task in cls.objects.filter(id__in=task_ids):
                task.announce()
        elif task_ids:
            counts: dict[str, int] = {}
            for lo in range(0, len(task_ids), 5000):
                for status, n in (
                    cls.objects.filter(id__in=task_ids[lo : lo + 5000])
                    .values_list("status")
                    .annotate(n=Count("id"))
                    .order_by()
                ):
                    counts[status] = counts.get(status, 0) + n
            publish(
                "plan_updated",
                {"tasks_changed": len(task_ids), "task_ids": sorted(task_ids)[:EVENT_ID_LIMIT], "statuses": counts},
            )

    @classmethod
    def prune(cls, now=None) -> int:
        """Ended tasks older than VX11_DAUGHTER_RETENTION_DAYS, with their daughters and attempts (rows deleted).
        The daughters go first, in chunks of their own: a task's delete would load every daughter of the chunk's
        tasks at once (their `children` link is SET_NULL, so Django cannot delete them in one statement)."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.VX11_DAUGHTER_RETENTION_DAYS)
        old = cls.objects.filter(status__in=cls.FINAL, updated__lt=cutoff)
        return prune_in_chunks(Daughter.objects.filter(task__in=old)) + prune_in_chunks(old)


class Daughter(models.Model):
    """One child task: a kind of work, its params, its TTL and its life on the workers."""

    class Status(models.TextChoices):
        SPAWNED = "spawned"
        RUNNING = "running"
        RESTARTING = "restarting"
        FINISHED = "finished"
        FAILED = "failed"
        KILLED = "killed"
        EXPIRED = "expired"
        MUTATED = "mutated"

    QUEUED = (Status.SPAWNED, Status.MUTATED, Status.RESTARTING)  # waiting for a worker
    LIVE = (*QUEUED, Status.RUNNING)
    FINAL = (Status.FINISHED, Status.FAILED, Status.KILLED, Status.EXPIRED)

    task = models.ForeignKey(DaughterTask, on_delete=models.CASCADE, related_name="daughters")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    name = models.CharField(max_length=100)
    purpose = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=32)
    params = models.JSONField(default=dict)
    spawn_uuid = models.UUIDField(default=uuid.uuid4, editable=False, unique=True)
    priority = models.PositiveSmallIntegerField(default=2, help_text="copied from the task; lower runs first")
    ttl_seconds = models.PositiveIntegerField(default=300)
    max_retries = models.PositiveSmallIntegerField(
        default=2, help_text="copied from the task, so the reaper's UPDATE needs no join"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SPAWNED)
    mutation_level = models.PositiveSmallIntegerField(default=0, help_text="retries so far")
    error_last = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="handed to a worker (counts against the cap)")
    started_at = models.DateTimeField(null=True, blank=True, help_text="first start; the TTL counts from here")
    expires_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    reaped_at = models.DateTimeField(
        null=True, blank=True, help_text="the reaper's last touch (marks one sweep's rows)"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            # dispatch(): queued daughters in priority order, and the count of dispatched live ones
            models.Index(fields=["status", "dispatched_at", "priority", "id"], name="daughter_queue"),
            # reap(): live daughters past their TTL
            models.Index(fields=["status", "expires_at"], name="daughter_ttl"),
            # reap(): running daughters whose heartbeat stopped
            models.Index(fields=["status", "last_heartbeat_at"], name="daughter_heartbeat"),
            # reap(): the rows one sweep touched
            models.Index(fields=["reaped_at"], name="daughter_reaped"),
        ]

    def __str__(self) -> str:
        return f"daughter #{self.pk} {self.name} ({self.status})"

    def event_data(self, previous: str | None = None) -> dict:
        return {
            "daughter_id": self.pk,
            "task_id": self.task_id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "previous": previous,
            "mutation_level": self.mutation_level,
            "error": self.error_last[:500] or None,
        }

    def announce(self, previous: str | None, tasks_changed: list[int]) -> None:
        publish("status_changed", self.event_data(previous))
        DaughterTask.announce_changes(tasks_changed)

    # --- dispatching ----------------------------------------------------------------------------

    @classmethod
    def dispatch(cls) -> int:
        """Hand queued daughters to the workers, best priority first, up to the running cap."""
        with transaction.atomic():
            if connection.vendor == "postgresql":  # SQLite's IMMEDIATE transactions already serialise this
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('vx11.daughters.dispatch'))")
            busy = cls.objects.filter(status__in=cls.LIVE, dispatched_at__isnull=False).count()
            free = settings.VX11_DAUGHTER_MAX_RUNNING - busy
            if free <= 0:
                return 0
            picked = list(
                cls.objects.filter(status__in=cls.QUEUED, dispatched_at__isnull=True)
                .order_by("priority", "id")
                .values_list("id", "mutation_level")[:free]
            )
            if not picked:
                return 0
            cls.objects.filter(id__in=[i for i, _ in picked]).update(dispatched_at=timezone.now())
            transaction.on_commit(lambda: cls._send(picked))
        return len(picked)

    @classmethod
    def _send(cls, picked: list[tuple[int, int]]) -> None:
        """Hand the claimed daughters to the broker; those it cannot take go back to the queue."""
        from .tasks import run_daughter

        for n, (daughter_id, level) in enumerate(picked):
            try:
                run_daughter.delay(daughter_id, level)
            except Exception as exc:  # broker unreachable: the rows wait for the next dispatch (reaper, next spawn)
                unsent = [i for i, _ in picked[n:]]
                log.warning("could not hand %d daughter(s) to the broker: %s", len(unsent), exc)
                cls.objects.filter(id__in=unsent, dispatched_at__isnull=False, status__in=cls.QUEUED).update(
                    dispatched_at=None
                )
                return

    # --- running on a worker --------------------------------------------------------------------

    @classmethod
    def run(cls, daughter_id: int, level: int, worker: str = "") -> str:
        """Claim, run with heartbeats, record the end. Returns what happened (for the task result)."""
        now = timezone.now()
        daughter = cls.objects.filter(pk=daughter_id).first()
        if daughter is None:
            return "gone"
        previous = daughter.status
        claim = {
            "status": cls.Status.RUNNING,
            "last_heartbeat_at": now,
            "started_at": daughter.started_at or now,
            "expires_at": daughter.expires_at or now + timedelta(seconds=daughter.ttl_seconds),
        }
        with transaction.atomic():  # the claim, its attempt and the task's status are seen together or not at all
            if not cls.objects.filter(pk=daughter_id, status__in=cls.QUEUED, mutation_level=level).update(**claim):
                # a duplicate delivery, or killed
                return f"not claimed (now {daughter.status}, level {daughter.mutation_level})"
            for field, value in claim.items():
                setattr(daughter, field, value)
            attempt = DaughterAttempt.objects.create(
                daughter=daughter, attempt_number=level + 1, started_at=now, worker=worker[:200]
            )
            daughter.attempt = attempt
            daughter.announce(previous, DaughterTask.refresh_statuses([daughter.task_id]))
        try:
            result = daughter._work(level)
        except Exception as exc:  # the kind failed: retry while retries remain
            return daughter._fail(level, attempt, exc)
        finally:
            daughter.stop.set()
        return daughter._finish(level, attempt, result)

    def _work(self, level: int):
        """Run the kind in a thread; heartbeat meanwhile. A heartbeat that finds the row no longer
        running this attempt (killed, expired, reaped) stops the work."""
        self.stop = threading.Event()
        from .kinds import KINDS

        run = KINDS[self.kind][0]

        def call():
            try:
                return run(self, self.params)
            finally:
                connections.close_all()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"daughter-{self.pk}")
        future = pool.submit(call)
        try:
            while not wait([future], timeout=settings.VX11_DAUGHTER_HEARTBEAT_SECONDS).done:
                if not self.heartbeat(level):
                    self.stop.set()
                    raise Superseded()
            return future.result()
        finally:
            pool.shutdown(wait=True)

    def heartbeat(self, level: int) -> bool:
        """Still ours? Then say so. False when the row was killed, expired or retried elsewhere."""
        return self._move(level, last_heartbeat_at=timezone.now())

    def _move(self, level: int, **fields) -> bool:
        """A conditional UPDATE of this attempt's running row; when it takes, the instance shows it too."""
        if not Daughter.objects.filter(pk=self.pk, status=self.Status.RUNNING, mutation_level=level).update(**fields):
            return False
        for field, value in fields.items():
            setattr(self, field, value)
        return True

    def _settle(
        self, level: int, attempt: DaughterAttempt, fields: dict, attempt_status: str, output: str = "", error: str = ""
    ) -> bool:
        """End the attempt and move the daughter (if the row is still this attempt's) and refresh its task,
        and their events, in one transaction: nobody reads a failed daughter beside a running attempt or task."""
        with transaction.atomic():
            moved = self._move(level, **fields)
            if moved:
                attempt.end(attempt_status, output=output, error=error)
                self.announce(self.Status.RUNNING, DaughterTask.refresh_statuses([self.task_id]))
            else:
                attempt.end(
                    DaughterAttempt.Status.CANCELLED,
                    output=output,
                    error=error or "ended after the daughter was killed, expired or retried",
                )
        Daughter.dispatch()
        return moved

    def _finish(self, level: int, attempt: DaughterAttempt, result) -> str:
        done = self._settle(
            level,
            attempt,
            {"status": self.Status.FINISHED, "ended_at": timezone.now(), "result": result, "error_last": ""},
            DaughterAttempt.Status.SUCCESS,
            output=str(result),
        )
        return "finished" if done else "superseded"

    def _fail(self, level: int, attempt: DaughterAttempt, exc: Exception) -> str:
        if isinstance(exc, Superseded):
            self.refresh_from_db()
            attempt.end(
                DaughterAttempt.Status.TIMEOUT
                if self.status == self.Status.EXPIRED
                else DaughterAttempt.Status.CANCELLED,
                error=f"stopped: the daughter is now {self.status}",
            )
            Daughter.dispatch()
            return "stopped"
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if level < self.max_retries:
            fields = {
                "status": self.Status.MUTATED,
                "mutation_level": level + 1,
                "dispatched_at": None,
                "error_last": error,
            }
        else:
            fields = {"status": self.Status.FAILED, "ended_at": timezone.now(), "error_last": error}
        self._settle(
            level,
            attempt,
            fields,
            DaughterAttempt.Status.TIMEOUT if isinstance(exc, TimeoutError) else DaughterAttempt.Status.ERROR,
            error=error,
        )
        return self.status

    # --- cancel and reap (set-based) ------------------------------------------------------------

    @classmethod
    def kill(cls, queryset, user=None) -> int:
        """Cancel: every live daughter of the queryset becomes `killed`, saying by whom; running ones stop at
        their next heartbeat."""
        now = timezone.now()
        why = f"killed (cancelled by {user.get_username()})" if getattr(user, "pk", None) else "killed (cancelled)"
        with transaction.atomic():
            n = queryset.filter(status__in=cls.LIVE).update(
                status=cls.Status.KILLED, ended_at=now, reaped_at=now, error_last=why
            )
            DaughterAttempt.objects.filter(
                daughter__reaped_at=now, daughter__status=cls.Status.KILLED, status=DaughterAttempt.Status.RUNNING
            ).update(status=DaughterAttempt.Status.CANCELLED, ended_at=now, error=why)
            if n:
                cls._announce_sweep(now, "killed", cls._refresh_swept_tasks(now))
        if n:
            DaughterAttempt.kill_orphans(
                DaughterAttempt.objects.filter(ended_at=now, status=DaughterAttempt.Status.CANCELLED)
            )
        cls.dispatch()
        return n

    @classmethod
    def reap(cls, now=None) -> dict:
        """One sweep, each step a single UPDATE: TTL expiry, stale heartbeats (retry or fail), lost dispatches."""
        now = now or timezone.now()
        stale_before = now - timedelta(seconds=settings.VX11_DAUGHTER_STALE_SECONDS)
        S = cls.Status
        with transaction.atomic():
            expired = cls.objects.filter(status__in=cls.LIVE, expires_at__lt=now).update(
                status=S.EXPIRED, ended_at=now, reaped_at=now, error_last="TTL passed (expired)"
            )
            stale = cls.objects.filter(status=S.RUNNING, last_heartbeat_at__lt=stale_before)
            # no join here: Django would turn a joined filter into `id IN (subquery)` and the UPDATE
            # would no longer re-check status and heartbeat under the row lock
            retried = stale.filter(mutation_level__lt=F("max_retries")).update(
                status=S.MUTATED,
                mutation_level=F("mutation_level") + 1,
                dispatched_at=None,
                reaped_at=now,
                error_last=f"no heartbeat for {settings.VX11_DAUGHTER_STALE_SECONDS} s (worker lost?); retrying",
            )
            failed = stale.update(
                status=S.FAILED,
                ended_at=now,
                reaped_at=now,
                error_last=f"no heartbeat for {settings.VX11_DAUGHTER_STALE_SECONDS} s; retries exhausted",
            )
            requeued = cls.objects.filter(
                status__in=cls.QUEUED, dispatched_at__lt=now - timedelta(seconds=settings.VX11_DAUGHTER_START_TIMEOUT)
            ).update(dispatched_at=None)
            DaughterAttempt.objects.filter(status=DaughterAttempt.Status.RUNNING, daughter__reaped_at=now).update(
                status=DaughterAttempt.Status.TIMEOUT, ended_at=now, error="reaped: TTL passed or no heartbeat"
            )
            if expired or retried or failed:
                cls._announce_sweep(now, "reaped", cls._refresh_swept_tasks(now))
        if expired or retried or failed:
            DaughterAttempt.kill_orphans(
                DaughterAttempt.objects.filter(ended_at=now, status=DaughterAttempt.Status.TIMEOUT)
            )
        cls.dispatch()
        return {"expired": expired, "retried": retried, "failed": failed, "requeued": requeued}

    @classmethod
    def _refresh_swept_tasks(cls, now) -> list[int]:
        """Inside the sweep's transaction: the touched daughters' tasks take their new status with them."""
        task_ids = list(cls.objects.filter(reaped_at=now).values_list("task_id", flat=True).distinct().order_by())
        return DaughterTask.refresh_statuses(task_ids)

    @classmethod
    def _announce_sweep(cls, now, why: str, tasks_changed: list[int]) -> None:
        """In the sweep's transaction: one event per status for the rows it touched (a sweep may touch
        100,000), then the tasks."""
        touched = cls.objects.filter(reaped_at=now)
        by_status = dict(touched.values_list("status").annotate(n=Count("id")).order_by())
        for status, n in by_status.items():
            ids = list(touched.filter(status=status).order_by("id").values_list("id", flat=True)[:EVENT_ID_LIMIT])
            publish("status_changed", {"daughters_changed": n, "status": status, "why": why, "daughter_ids": ids})
        DaughterTask.announce_changes(tasks_changed)


class Superseded(Exception):
    """The row stopped being this attempt's while it ran (killed, expired, reaped)."""


class DaughterAttempt(models.Model):
    """One run of a daughter on a worker; a retried daughter has several."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCESS = "success"
        ERROR = "error"
        TIMEOUT = "timeout"
        CANCELLED = "cancelled"

    daughter = models.ForeignKey(Daughter, on_delete=models.CASCADE, related_name="attempts")
    attempt_number = models.PositiveSmallIntegerField()
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="a command's process group while it runs")
    host = models.CharField(max_length=255, blank=True, help_text="where that process runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["daughter_id", "attempt_number"]

    def __str__(self) -> str:
        return f"attempt {self.attempt_number} of daughter #{self.daughter_id} ({self.status})"

    def end(self, status: str, output: str = "", error: str = "") -> None:
        DaughterAttempt.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            status=status,
            ended_at=timezone.now(),
            output=display.tail(output, settings.VX11_DAUGHTER_OUTPUT_CHARS),
            error=display.tail(error, settings.VX11_DAUGHTER_OUTPUT_CHARS),
            pid=None,
        )

    @classmethod
    def kill_orphans(cls, attempts) -> int:
        """The commands of attempts a sweep just ended (reaped, killed) whose worker may be gone (SIGKILL,
        OOM): each process group on this host still carrying its attempt's id in its environment is
        killed. A live worker would stop it at its next heartbeat; a dead one never will. Another host's
        processes are left to that host (its worker, or the command's own timeout)."""
        killed = 0
        for attempt_id, pid in attempts.filter(pid__isnull=False, host=HOST).values_list("id", "pid"):
            if attempt_of_process(pid) == attempt_id:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
                    log.warning(
                        "killed the orphaned command of daughter attempt %s (process group %s)", attempt_id, pid
                    )
        attempts.filter(pid__isnull=False).update(pid=None)
        return killed


def attempt_of_process(pid: int) -> int | None:
    """The daughter attempt a process says it belongs to (its environment), or None: gone, not ours,
    or a reused pid running something else."""
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    prefix = f"{ATTEMPT_ENV}=".encode()
    for entry in environ:
        if entry.startswith(prefix):
            with contextlib.suppress(ValueError):
                return int(entry[len(prefix) :])
    return None
