"""Running the pipeline: start, the Celery chain, one phase, the run's bag, the end, cancel, the sweep, and the human
actions on the fleet counted while a run goes.

A run's phases run in order, each as its own task (`run_phase`), then `finish_run`; the CLI calls the same two
functions in its own process (`run_inline`). A phase's files go to <VX11_EVIDENCE_ROOT>/pipeline/<run id>/
phase_<n>_<name>/ while the run goes; `seal` makes the run's one bag (docs/audit/<stamp>_autonomy_pipeline/) from
them before the mirror phase (which pushes that very bag) or at the end, and the phases' evidence then points
into it. The mirror phase's own log stays in the staging folder: the bag it pushes was sealed before it ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from vx11_site.db import heartbeat_thread

from .models import ALL_PHASES, PhaseRun, PipelineRun
from .phases import BY_NUMBER, FAILED, PHASES, Context, Outcome

log = logging.getLogger(__name__)

SYSTEM_USER = "vx11-pipeline"
# what the pipeline's own user may do: exactly the work of its phases
SYSTEM_PERMISSIONS = (
    "audits.run_audit",
    "housekeeping.add_housekeepingrun",
    "housekeeping.apply_housekeeping",
    "power.control_services",
    "flows.run_flow",
)
BAG_NAME = "autonomy_pipeline"
# the admin changes that act on the fleet: its modules, their power controls and windows, the schedules
FLEET_MODELS = (
    ("fleet", "module"),
    ("fleet", "maintenancewindow"),
    ("power", "servicecontrol"),
    ("django_celery_beat", "periodictask"),
    ("django_celery_beat", "intervalschedule"),
    ("django_celery_beat", "crontabschedule"),
)
OnProgress = Callable[[int, int, int, str], None]  # phase number, done, total, step


def system_user():
    """The pipeline's own user (no password, no login): it acts in the phases, and it is never counted as a human."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    user, created = get_user_model().objects.get_or_create(username=SYSTEM_USER, defaults={"is_active": True})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    wanted = Q(pk__in=[])
    for perm in SYSTEM_PERMISSIONS:
        app, codename = perm.split(".")
        wanted |= Q(content_type__app_label=app, codename=codename)
    if user.user_permissions.filter(wanted).count() < len(SYSTEM_PERMISSIONS):
        user.user_permissions.add(*Permission.objects.filter(wanted))
        user = get_user_model().objects.get(pk=user.pk)  # a fresh permission cache
    return user


def staging(run: PipelineRun) -> Path:
    return Path(settings.VX11_EVIDENCE_ROOT) / "pipeline" / str(run.id)


def parse_phases(text: str | list | tuple | None) -> list[int]:
    """ "1,3,6" (or a list) -> [1, 3, 6]; all seven when empty. ValueError says what is wrong."""
    if text is None or text == "" or text == []:
        return list(ALL_PHASES)
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        numbers = sorted({int(str(part).strip()) for part in parts if str(part).strip()})
    except ValueError:
        raise ValueError(f"phases must be numbers from 1 to 7 separated by commas, not {text!r}") from None
    if not numbers or any(n not in ALL_PHASES for n in numbers):
        raise ValueError(f"phases must be numbers from 1 to 7, not {text!r}")
    return numbers


# --- starting --------------------------------------------------------------------------------------------


def start(trigger: str, user=None, phases=None, now: datetime | None = None) -> PipelineRun:
    """A queued run holding the slot (models.Busy if one is going); nothing runs yet."""
    return PipelineRun.start(trigger, user=user, phases=parse_phases(phases), now=now)


def queue(run: PipelineRun) -> PipelineRun:
    """Hand the run to Celery after the commit: one task per phase asked for, chained, then the end. A broker that
    refuses it fails the run at once, so nobody waits for it."""
    from celery import chain

    from .tasks import finish_pipeline_run, run_pipeline_phase

    def send():
        try:
            chain(
                *[run_pipeline_phase.si(run.id, number) for number in run.phases], finish_pipeline_run.si(run.id)
            ).apply_async()
        except Exception as exc:
            log.warning("pipeline run %s could not be queued: %s", run.id, exc)
            skip_pending(run, "not run: the run could not be queued")
            run.end(PipelineRun.Status.FAILED, error=f"could not be queued: the Celery broker is unreachable ({exc})")

    transaction.on_commit(send)
    return run


def run_inline(run: PipelineRun, on_progress: OnProgress | None = None, on_phase=None) -> PipelineRun:
    """Every phase asked for, here and now, then the end (the CLI); `on_phase(phase)` after each phase."""
    for number in run.phases:
        phase = run_phase(run.id, number, on_progress=on_progress)
        if on_phase and phase is not None:
            on_phase(phase)
    return finish_run(run.id) or run


# --- one phase -------------------------------------------------------------------------------------------


def run_phase(
    run_id: int, number: int, on_progress: OnProgress | None = None, now: datetime | None = None
) -> PhaseRun | None:
    """Do phase `number` of the run (the task's body); None when there is nothing to do: the run ended, was
    cancelled, or this phase was already taken (a task delivered twice)."""
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None or run.finished:
        return None
    if run.cancel_requested:
        cancel_now(run)
        return None
    phase = run.phase_runs.get(number=number)
    if phase.status == PhaseRun.Status.RUNNING:  # the task came back: the worker that had it was lost mid-phase
        interrupt(run, f"interrupted: the worker running phase {number} was lost (its task was delivered again)", now)
        return None
    if phase.status != PhaseRun.Status.PENDING:
        return None
    spec = BY_NUMBER[number]
    failed = [n for n in spec.needs if run.phase_runs.get(number=n).status == FAILED]
    if failed:
        names = ", ".join(f"{n} ({BY_NUMBER[n].name})" for n in failed)
        PhaseRun.objects.filter(pk=phase.pk).update(
            status=PhaseRun.Status.SKIPPED, summary=f"skipped: phase {names} failed and this phase needs its output"
        )
        run.announce_plan()
        return run.phase_runs.get(number=number)
    started = now or timezone.now()
    run.mark_running(started)
    if not phase.claim(started):
        return None
    run.announce_plan()
    with heartbeat_thread(run.beat, settings.VX11_PIPELINE_HEARTBEAT_SECONDS, f"pipeline run {run.id}"):
        outcome = work(run, phase, on_progress, now)
    ended = now or timezone.now()
    folder = staging(run) / spec.folder
    phase.status, phase.summary, phase.details = outcome.status, outcome.summary[:5000], outcome.details
    phase.ended_at, phase.progress = ended, 100.0
    phase.evidence = files_of(folder)
    # a phase answers for the human actions since the phase before it ended: together they cover the whole run
    earlier = run.phase_runs.filter(number__lt=number, ended_at__isnull=False).order_by("-ended_at").first()
    since = earlier.ended_at if earlier else run.started_at or phase.started_at
    phase.interventions = len(interventions(since, ended))
    phase.save()
    run.beat(ended)
    run.announce_plan()
    return phase


def work(run: PipelineRun, phase: PhaseRun, on_progress: OnProgress | None, now: datetime | None) -> Outcome:
    spec = BY_NUMBER[phase.number]
    try:
        if spec.number == 7:
            seal(run, now)  # the mirror pushes the run's bag: it is made first
            run.refresh_from_db()
        progress = (
            None if on_progress is None else lambda done, total, step: on_progress(phase.number, done, total, step)
        )
        ctx = Context(run, phase, system_user(), staging(run) / spec.folder, progress, now)
        return spec.work(ctx)
    except Exception as exc:  # the phase could not do its work: say why, let the run go on
        log.exception("pipeline run %s: phase %s failed", run.id, phase.number)
        return Outcome(FAILED, f"error: {type(exc).__name__}: {exc}"[:2000])


def files_of(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    base = Path(settings.VX11_EVIDENCE_ROOT)
    return [f.relative_to(base).as_posix() for f in sorted(folder.rglob("*")) if f.is_file() and not f.is_symlink()]


# --- the end ---------------------------------------------------------------------------------------------


def finish_run(run_id: int, now: datetime | None = None) -> PipelineRun | None:
    """Seal the bag (unless the mirror phase did), count the human actions of the whole run, end it."""
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None or run.finished:
        return run
    if run.cancel_requested:
        return cancel_now(run)
    skip_pending(run, "skipped: the run ended before this phase ran")  # a chain cut short; nothing ran it
    error = ""
    try:
        seal(run, now)
    except Exception as exc:
        log.exception("pipeline run %s: evidence not written", run.id)
        error = f"evidence not written: {exc}"
    ended = now or timezone.now()
    record_interventions(run, ended)
    status = PipelineRun.Status.FAILED if error else run.outcome()
    run.end(status, ended, error)
    return run


def record_interventions(run: PipelineRun, until: datetime) -> None:
    found = interventions(run.started_at or run.created_at, until)
    run.manual_interventions, run.interventions = len(found), found
    PipelineRun.objects.filter(pk=run.pk).update(manual_interventions=len(found), interventions=found)


def skip_pending(run: PipelineRun, why: str) -> None:
    run.phase_runs.filter(status=PhaseRun.Status.PENDING).update(status=PhaseRun.Status.SKIPPED, summary=why)


def cancel(run: PipelineRun, user) -> PipelineRun:
    """Ask a run to stop: the phase going on finishes, the rest are skipped. A run no worker has started ends now.
    ValueError if it has already ended."""
    who = getattr(user, "username", "") or "someone"
    if not PipelineRun.objects.filter(pk=run.pk, status__in=PipelineRun.UNFINISHED).update(cancel_requested=who):
        raise ValueError(f"run #{run.id} has already ended ({run.status})")
    run.refresh_from_db()
    if run.status == PipelineRun.Status.QUEUED:
        cancel_now(run)
    else:
        run.announce_plan()
    return run


def cancel_now(run: PipelineRun, now: datetime | None = None) -> PipelineRun:
    skip_pending(run, f"skipped: the run was cancelled by {run.cancel_requested}")
    try:
        seal(run, now)
    except Exception:
        log.exception("pipeline run %s: evidence not written on cancel", run.id)
    record_interventions(run, now or timezone.now())
    run.end(PipelineRun.Status.CANCELLED, now, f"cancelled by {run.cancel_requested}")
    return run


def sweep(now: datetime | None = None) -> list[int]:
    """End as `interrupted` every unfinished run with no sign of its worker for VX11_PIPELINE_SILENT_SECONDS (its
    heartbeat, or its creation for a run no worker took): the running phase failed, the rest skipped, the bag made
    from what was staged. Run every minute by beat, so a lost worker is noticed within the bound plus a minute."""
    now = now or timezone.now()
    bound = settings.VX11_PIPELINE_SILENT_SECONDS
    ended = []
    for run in PipelineRun.objects.filter(status__in=PipelineRun.UNFINISHED):
        silent = (now - (run.heartbeat_at or run.created_at)).total_seconds()
        if silent > bound and interrupt(
            run, f"interrupted: no sign of its worker for {silent:.0f} s (the bound is {bound} s)", now
        ):
            ended.append(run.id)
    return ended


def interrupt(run: PipelineRun, reason: str, now: datetime | None = None) -> bool:
    """End the run as interrupted: its running phase failed with the reason, the rest skipped, its bag made from
    what was staged. False if it had already ended."""
    now = now or timezone.now()
    run.phase_runs.filter(status=PhaseRun.Status.RUNNING).update(
        status=PhaseRun.Status.FAILED, summary=reason, ended_at=now
    )
    skip_pending(run, "not reached: the run was interrupted")
    try:
        seal(run, now)
    except Exception:
        log.exception("pipeline run %s: evidence not written on interruption", run.id)
    record_interventions(run, now)
    return run.end(PipelineRun.Status.INTERRUPTED, now, reason)


# --- the bag ---------------------------------------------------------------------------------------------


def seal(run: PipelineRun, now: datetime | None = None) -> str:
    """Make the run's bag from its staged files (once), point the phases' evidence into it, clear the staging."""
    from apps.evidence.bags import write_bag

    run.refresh_from_db()
    if run.evidence_path:
        return run.evidence_path
    folder = staging(run)
    files: dict[str, str | bytes] = {}
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file() and not file.is_symlink():
                files[file.relative_to(folder).as_posix()] = file.read_bytes()
    record_interventions(run, now or timezone.now())
    files["run.json"] = json.dumps(run.as_json(), indent=2, sort_keys=True, default=str) + "\n"
    bag = write_bag(
        BAG_NAME,
        "pipeline",
        files,
        info={
            "description": f"VX11 autonomy pipeline run #{run.id}",
            "started_at": run.started_at or run.created_at,
            "finished_at": now or timezone.now(),
            "trigger": run.trigger,
            "actor": run.actor,
        },
        run_id=str(run.id),
        now=now,
        index=evidence_index(run),
    )
    PipelineRun.objects.filter(pk=run.pk).update(evidence_path=bag.path)
    run.evidence_path = bag.path
    for phase in run.phase_runs.all():
        prefix = f"{BY_NUMBER[phase.number].folder}/"
        phase.evidence = [f"{bag.path}/data/{name}" for name in files if name.startswith(prefix)]
        PhaseRun.objects.filter(pk=phase.pk).update(evidence=phase.evidence)
        shutil.rmtree(folder / prefix, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # when empty: everything is in the bag
    return bag.path


def evidence_index(run: PipelineRun) -> str:
    """EVIDENCE_INDEX.md's account of the run: per phase, what ran, what it found, where its files are."""
    lines = [
        f"## Autonomy pipeline run #{run.id}",
        "",
        f"Started by {run.actor} ({run.trigger}) at {run.started_at or run.created_at}; verdict "
        f"{run.verdict or 'NV'}; {run.manual_interventions} human action(s) on the fleet while it ran "
        "(counted up to this bag; the run's record has the final count).",
        "",
    ]
    phases = {p.number: p for p in run.phase_runs.all()}
    for spec in PHASES:
        phase = phases.get(spec.number)
        if phase is None:
            continue
        lines.append(f"### Phase {spec.number}: {spec.title}")
        lines.append("")
        lines.append(
            f"- status: {phase.status}" + (f" ({phase.duration_seconds:g} s)" if phase.duration_seconds else "")
        )
        lines.append(f"- what it found: {phase.summary or '-'}")
        if spec.number == 7:
            lines.append(
                "- evidence: this bag is what phase 7 commits and pushes to the mirror; its outcome (commit, push) is "
                "in the run's record (API and admin), and its git log in the staging folder pipeline/<run id>/"
            )
        else:
            lines.append(f"- evidence: data/{spec.folder}/" if phase.status not in ("skipped", "pending") else "- -")
        lines.append("")
    return "\n".join(lines)


# --- human actions on the fleet --------------------------------------------------------------------------


def interventions(since: datetime | None, until: datetime) -> list[dict]:
    """Every human action on the fleet in [since, until], from the audit rows: applied power actions, applied
    housekeeping, admin changes to modules, power controls, windows and schedules. The pipeline's own user is not
    a human; the fleet token's user (a VX11 client) is counted, as someone sent it."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import Q

    from apps.housekeeping.models import HousekeepingRun
    from apps.power.models import PowerAction

    if since is None:
        return []
    found: list[dict[str, Any]] = []
    power = (
        PowerAction.objects.filter(applied=True, parent__isnull=True, at__gte=since, at__lte=until, user__isnull=False)
        .exclude(user__username=SYSTEM_USER)
        .order_by("at")
    )
    for action in power:
        found.append(
            {"at": action.at, "kind": "power", "user": action.actor, "what": f"{action.action} {action.service}"}
        )
    housekeeping = (
        HousekeepingRun.objects.filter(applied=True, started_at__gte=since, started_at__lte=until, user__isnull=False)
        .exclude(user__username=SYSTEM_USER)
        .order_by("started_at")
    )
    for row in housekeeping:
        found.append(
            {"at": row.started_at, "kind": "housekeeping", "user": row.actor, "what": f"{row.operation} #{row.pk}"}
        )
    fleet_types = Q(pk__in=[])
    for app, model in FLEET_MODELS:
        fleet_types |= Q(app_label=app, model=model)
    types = ContentType.objects.filter(fleet_types).values_list("pk", flat=True)
    edits = (
        LogEntry.objects.filter(action_time__gte=since, action_time__lte=until, content_type_id__in=types)
        .exclude(user__username=SYSTEM_USER)
        .select_related("user", "content_type")
        .order_by("action_time")
    )
    verbs = {1: "added", 2: "changed", 3: "deleted"}
    for entry in edits:
        model = entry.content_type.model if entry.content_type else "?"
        what = f"{verbs.get(entry.action_flag, 'edited')} {model} {entry.object_repr}"
        found.append({"at": entry.action_time, "kind": "admin", "user": entry.user.username, "what": what[:300]})
    found.sort(key=lambda item: item["at"])
    return [{**item, "at": item["at"].isoformat()} for item in found]
