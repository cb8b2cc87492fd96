"""The seven phases: each calls the app that owns the work, writes its evidence files and says how it went.

A phase function takes a `Context` (the run, the phase row, the pipeline's own user, the folder its files go to)
and returns an `Outcome`: `ok`, `findings` (it did its work and found something wrong: the run goes on), or
`failed` (it could not do its work). An exception is a failed phase too (apps.pipeline.runner catches it).

What needs what (`Phase.needs`): when a phase fails, the phases that need its output are skipped.
- 2 cleanup needs 1 audit: housekeeping moves what the audit of the tree sees; with the audit failed, the tree's
  state is unknown and nothing is moved.
- 7 mirror needs 6 metrics: it publishes this run's PERCENTAGES.json / SCORECARD.json; without a snapshot of this
  run it would push the previous one's numbers under this run's name.
Phases 3, 4, 5 and 6 need nothing: the metrics phase runs whatever failed and shows NV where evidence is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from vx11_site import outbound

from .models import PhaseRun, PipelineRun

OK = PhaseRun.Status.OK
FINDINGS = PhaseRun.Status.FINDINGS
FAILED = PhaseRun.Status.FAILED
SKIPPED = PhaseRun.Status.SKIPPED
NICE = 10  # how much lower than the worker a test command runs
ANNOUNCE_EVERY = 1.0  # seconds between a phase's progress announcements


@dataclass
class Outcome:
    status: str
    summary: str
    details: dict = field(default_factory=dict)


class Context:
    """What a phase works with; its files go to `folder` (the run's staging folder for this phase)."""

    def __init__(
        self,
        run: PipelineRun,
        phase: PhaseRun,
        user,
        folder: Path,
        on_progress: Callable[[int, int, str], None] | None = None,
        now: datetime | None = None,
    ):
        self.run, self.phase, self.user, self.folder = run, phase, user, folder
        self.on_progress = on_progress
        self.fixed_now = now
        self.announced = time.monotonic()  # the phase's start was just announced
        self.folder.mkdir(parents=True, exist_ok=True)

    def now(self) -> datetime:
        return self.fixed_now or timezone.now()

    def path(self, name: str) -> Path:
        """A file of this phase, confined to its folder."""
        target = (self.folder / name).resolve()
        if not target.is_relative_to(self.folder.resolve()):
            raise ValueError(f"{name!r} is outside the phase's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, name: str, content: str | bytes) -> Path:
        target = self.path(name)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        return target

    def write_json(self, name: str, data) -> Path:
        return self.write(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def copy_bag(self, bag_path: str, into: str) -> int:
        """Copy the payload (data/) of another app's bag into this phase's folder, so the run's bag stands alone."""
        if not bag_path:
            return 0
        source = (Path(settings.VX11_EVIDENCE_ROOT) / bag_path / "data").resolve()
        if not source.is_relative_to(Path(settings.VX11_EVIDENCE_ROOT).resolve()) or not source.is_dir():
            return 0
        copied = 0
        for file in sorted(source.rglob("*")):
            if file.is_file() and not file.is_symlink():
                shutil.copyfile(file, self.path(f"{into}/{file.relative_to(source).as_posix()}"))
                copied += 1
        return copied

    def progress(self, done: int, total: int, step: str) -> None:
        """Store how far the phase is; announce it (plan_updated, the run page's timeline) at most once a second."""
        self.phase.progress = round(100.0 * done / total, 1) if total else 0.0
        self.phase.step = step[:300]
        PhaseRun.objects.filter(pk=self.phase.pk).update(progress=self.phase.progress, step=self.phase.step)
        if time.monotonic() - self.announced >= ANNOUNCE_EVERY:
            self.announced = time.monotonic()
            self.run.announce_plan()
        if self.on_progress:
            self.on_progress(done, total, step)


# --- 1. audit -----------------------------------------------------------------------------------------


def audit(ctx: Context) -> Outcome:
    from apps.audits.models import AuditRun
    from apps.audits.runner import run_now

    run = run_now("all", trigger="pipeline", user=ctx.user, on_progress=ctx.progress)
    ctx.write_json("audit.json", run.as_json())
    ctx.copy_bag(run.evidence_path, "audit_bag")
    findings = [f for f in run.findings.all() if f.severity != "info"]
    shown = "; ".join(f"{f.check_name}: {f.message}" for f in findings[:3])
    summary = f"audit #{run.id} ({run.target or 'no target'}): {run.status}, {len(findings)} finding(s)"
    summary += f": {shown}" if shown else ""
    status = OK if run.status == AuditRun.Status.OK else FINDINGS if run.status == AuditRun.Status.FINDINGS else FAILED
    if run.error:
        summary += f"; error: {run.error}"
    return Outcome(status, summary, {"audit_run": run.id, "evidence": run.evidence_path})


# --- 2. cleanup ---------------------------------------------------------------------------------------


def cleanup(ctx: Context) -> Outcome:
    from apps.housekeeping.models import HousekeepingRun
    from apps.housekeeping.runner import run

    apply = settings.VX11_PIPELINE_CLEANUP_APPLY
    row = run(ctx.user, apply=apply, via="pipeline", now=ctx.fixed_now)
    ctx.write_json("housekeeping.json", row.as_dict())
    ctx.copy_bag(row.evidence_path, "housekeeping_bag")
    counts = f"{len(row.moves)} path(s) {'moved' if apply else 'would move'}, {len(row.refused)} refused, "
    counts += f"{len(row.protected)} protected"
    summary = f"housekeeping #{row.pk} ({'applied' if apply else 'dry run'}): {row.status}; {counts}"
    if row.status == HousekeepingRun.Status.ERROR:
        return Outcome(FAILED, f"{summary}; {row.message}", {"housekeeping_run": row.pk})
    if row.status != HousekeepingRun.Status.OK or (row.moves and not apply):
        hint = "" if apply else " (VX11_PIPELINE_CLEANUP_APPLY=1 moves them to the attic)"
        return Outcome(FINDINGS, summary + hint, {"housekeeping_run": row.pk})
    return Outcome(OK, summary, {"housekeeping_run": row.pk})


# --- 3. runner ----------------------------------------------------------------------------------------


def runner(ctx: Context) -> Outcome:
    """A probe round of the whole fleet, the configured test commands, the flows (VX11_PIPELINE_FLOWS: A, B, C)."""
    from apps.fleet.probe import run_round
    from apps.flows.models import Flow

    tests = configured_tests()
    flows = list(settings.VX11_PIPELINE_FLOWS)
    total = 1 + len(tests) + len(flows)
    problems: list[str] = []
    ctx.progress(0, total, "probe round")
    results, changes = run_round()
    ctx.write_json("probe_round.json", [r.as_dict() for r in results])
    failing = sorted(r.slug for r in results if r.outcome == "fail")
    parts = [f"probe: {len(results) - len(failing)} of {len(results)} modules answered"]
    if failing:
        problems.append(f"not answering: {', '.join(failing)}")
    test_runs = []
    for done, spec in enumerate(tests, start=2):
        ctx.progress(done - 1, total, f"tests: {spec.get('name', '?')}")
        line, failed, record = run_test_command(ctx, spec)
        parts.append(line)
        test_runs.append(record)
        if failed:
            problems.append(line)
    if not tests:
        parts.append("tests: none configured (VX11_PIPELINE_TESTS)")
    flow_runs = {}
    failed_flows = []
    for done, name in enumerate(flows, start=2 + len(tests)):
        ctx.progress(done - 1, total, f"flow {name}")
        flow = Flow.objects.filter(name=name).first()
        if flow is None:
            failed_flows.append(name)
            problems.append(f"flow {name} is not loaded")
            continue
        flow_run = flow.run(trigger="pipeline", user=ctx.user)
        flow_runs[name] = flow_run.id
        ctx.write_json(f"flow_{name}.json", flow_run.summary())
        if flow_run.status != "passed":
            failed_flows.append(name)
            problems.append(f"flow {name} failed at {flow_run.failed_step or '?'}: {flow_run.reason}"[:300])
    parts.append(f"flows: {len(flows) - len(failed_flows)} of {len(flows)} passed")
    ctx.progress(total, total, "done")
    summary = "; ".join(parts) + ("" if not problems else " -- " + "; ".join(problems))
    details = {"flow_runs": flow_runs, "failed_flows": failed_flows, "test_runs": test_runs, "not_answering": failing}
    return Outcome(FINDINGS if problems else OK, summary, details)


def configured_tests() -> list[dict]:
    """VX11_PIPELINE_TESTS; when it is empty and a `vx11 demo` runs, the demo fleet's suite it records (so a run
    from another shell, `vx11 pipeline run`, runs what the demo's worker runs)."""
    from vx11_site import running_demo

    if settings.VX11_PIPELINE_TESTS:
        return list(settings.VX11_PIPELINE_TESTS)
    demo = running_demo.current() or {}
    return list(demo.get("pipeline_tests") or [])


def run_test_command(ctx: Context, spec: dict) -> tuple[str, bool, dict]:
    """One configured test command: run its argument list (no shell) with its timeout, read its report, store a
    metrics.TestRun (what tests_p0_pct is computed from). Returns (summary line, something failed, record)."""
    from apps.metrics.models import TestRun
    from apps.metrics.reports import PARSERS

    name = str(spec.get("name") or "tests")
    kind = spec.get("kind", TestRun.Kind.UNIT)
    report_kind = spec.get("report", "junit")
    argv = spec.get("argv")
    env = spec.get("env") or {}
    if kind not in TestRun.Kind.values or report_kind not in PARSERS or not isinstance(argv, list) or not argv:
        return f"tests {name}: misconfigured (kind unit|integration, report junit|pytest-json, argv a list)", True, {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        return f"tests {name}: misconfigured (env an object of strings)", True, {}
    report = ctx.path(f"tests/{name}.{'xml' if report_kind == 'junit' else 'json'}")
    argv = [str(a).replace("{report}", str(report)) for a in argv]
    timeout = float(spec.get("timeout", 1800))
    started = time.monotonic()
    try:
        output, code = run_niced(argv, settings.VX11_PIPELINE_TESTS_CWD, timeout, env)
    except OSError as exc:
        return f"tests {name}: could not start: {exc}", True, {"name": name}
    seconds = round(time.monotonic() - started, 1)
    ctx.write(f"tests/{name}.log", output[-200_000:])
    if code is None:
        return f"tests {name}: timed out after {timeout:g} s", True, {"name": name, "seconds": seconds}
    try:
        counts = PARSERS[report_kind](report.read_text())
    except (OSError, ValueError) as exc:
        return f"tests {name}: exit {code}, no readable report ({exc})", True, {"name": name, "exit": code}
    evidence = f"pipeline run {ctx.run.id}: phase_3_runner/tests/{report.name}"
    row = TestRun.objects.create(kind=kind, source=TestRun.Source.PIPELINE, evidence=evidence, **counts)
    failed = row.failed + row.errors
    line = f"tests {name} ({kind}): {row.passed} passed, {failed} failed, {row.skipped} skipped in {seconds:g} s"
    record = {"name": name, "kind": kind, "test_run": row.id, "exit": code, "seconds": seconds, **counts}
    return line, bool(failed) or row.passed == 0, record


def run_niced(argv: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[bytes, int | None]:
    """Run a test command (with `env` over the worker's environment) in a session of its own at a lower CPU priority
    (the portal's requests first); on timeout its whole process group is killed. Returns (its output, its exit code
    or None when it timed out)."""
    child = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, child.pid, NICE)
    try:
        output, _ = child.communicate(timeout=timeout)
        return output, child.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        return output, None


# --- 4. madre guardrails ------------------------------------------------------------------------------


def guardrails(ctx: Context) -> Outcome:
    from apps.power.selfcheck import check_guardrails

    report = check_guardrails(ctx.user)
    ctx.write_json("guardrails.json", report)
    bad = [case for case in report["cases"] if case.get("ok") is False]
    unchecked = [case for case in report["cases"] if case.get("ok") is None]  # a guard not checked is not proven
    summary = report["summary"]
    if bad:
        summary += " -- " + "; ".join(f"{c['name']}: {c.get('failure') or c['message']}" for c in bad)
    details = {"target": report["target"], "actions": [c.get("action") for c in report["cases"]]}
    return Outcome(FINDINGS if bad or unchecked else OK, summary, details)


# --- 5. operator check --------------------------------------------------------------------------------


def operator_check(ctx: Context) -> Outcome:
    from apps.operator.contract import check_live

    report = check_live(settings.VX11_PORTAL_URL, settings.VX11_TOKEN or "")
    ctx.write_json("operator_contract.json", report)
    bad = [check for check in report["checks"] if not check["ok"]]
    summary = f"{settings.VX11_PORTAL_URL}: {report['summary']}"
    if bad and all(check.get("status") is None for check in report["checks"]):
        return Outcome(FAILED, f"{summary} -- the portal did not answer: {bad[0]['problems'][:1]}")
    if bad:
        summary += " -- " + "; ".join(f"{c['name']}: {', '.join(c['problems'][:2])}" for c in bad[:4])
    return Outcome(FINDINGS if bad else OK, summary)


# --- 6. metrics ---------------------------------------------------------------------------------------


def metrics(ctx: Context) -> Outcome:
    from apps.metrics.snapshot import PERCENTAGES, SCORECARD, take_snapshot, verify_snapshot

    card = take_snapshot(actor=f"pipeline run #{ctx.run.id}")
    PipelineRun.objects.filter(pk=ctx.run.pk).update(scorecard=card, verdict=card.verdict)
    ctx.run.scorecard, ctx.run.verdict = card, card.verdict
    check = verify_snapshot(card)
    bag = Path(settings.VX11_EVIDENCE_ROOT) / card.evidence_path / "data"
    for name in (PERCENTAGES, SCORECARD):
        ctx.write(name, (bag / name).read_bytes())
    ctx.write_json("verify.json", check)
    rows = list(card.metrics.all())
    nv = [m.name for m in rows if m.value is None]
    summary = f"scorecard #{card.id}: {card.verdict}; {len(rows) - len(nv)} of {len(rows)} metrics with a value"
    summary += f" (NV: {', '.join(nv)})" if nv else ""
    if not check["ok"]:
        return Outcome(FAILED, summary + " -- its bag does not recompute", {"scorecard": card.id})
    return Outcome(OK, summary + "; recomputed from its bag: same numbers", {"scorecard": card.id})


# --- 7. mirror ----------------------------------------------------------------------------------------


def mirror(ctx: Context) -> Outcome:
    """The run's sealed bag and the latest PERCENTAGES.json / SCORECARD.json, committed and pushed."""
    from apps.evidence.bags import audit_dir

    from . import mirror as git_mirror

    remote = settings.VX11_MIRROR_REMOTE
    if not remote:
        return Outcome(SKIPPED, "no VX11_MIRROR_REMOTE set: nothing mirrored")
    if urlsplit(remote).scheme.lower() in ("http", "https"):
        try:  # git makes the request, but the portal's one policy decides where it may go
            outbound.check_url(remote)
        except outbound.Refused as refused:
            return Outcome(FAILED, f"mirror to {git_mirror.shown_remote(remote)} refused: {refused}")
    bag = Path(settings.VX11_EVIDENCE_ROOT) / ctx.run.evidence_path
    latest = {name: audit_dir() / name for name in ("PERCENTAGES.json", "SCORECARD.json")}
    message = f"VX11 pipeline run #{ctx.run.id}: {ctx.run.outcome()}, verdict {ctx.run.verdict or 'NV'}"
    try:
        result = git_mirror.mirror(
            bag,
            latest,
            message,
            repo=settings.VX11_MIRROR_REPO,
            remote=remote,
            branch=settings.VX11_MIRROR_BRANCH,
            author=settings.VX11_MIRROR_AUTHOR,
            timeout=settings.VX11_MIRROR_TIMEOUT,
        )
    except git_mirror.MirrorError as exc:
        return Outcome(FAILED, f"mirror not configured right: {exc}")
    ctx.write("mirror.log", result.log)
    PipelineRun.objects.filter(pk=ctx.run.pk).update(mirror_commit=result.commit, mirror_pushed=result.pushed)
    if result.pushed and result.pushed_commits:
        # an earlier run whose push failed: its commit went out with this one
        PipelineRun.objects.filter(mirror_commit__in=result.pushed_commits).update(mirror_pushed=True)
    details = {"commit": result.commit, "pushed": result.pushed, "pushed_commits": result.pushed_commits}
    details["unpushed"] = result.unpushed
    return Outcome(OK if result.ok else FAILED, result.message, details)


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    title: str
    needs: tuple[int, ...]
    work: Callable[[Context], Outcome]

    @property
    def folder(self) -> str:
        return f"phase_{self.number}_{self.name}"


PHASES: tuple[Phase, ...] = (
    Phase(1, "audit", "Audit: DB integrity, DB map, filesystem and git", (), audit),
    Phase(2, "cleanup", "Cleanup: housekeeping under its guards", (1,), cleanup),
    Phase(3, "runner", "Runner: probe round, test commands, flows A, B and C", (), runner),
    Phase(4, "madre_guardrails", "Madre guardrails: the power guards refuse what they must", (), guardrails),
    Phase(5, "operator_check", "Operator check: the v7 endpoints and /ws on the live portal", (), operator_check),
    Phase(6, "metrics", "Metrics: a scorecard snapshot from this run's evidence", (), metrics),
    Phase(7, "mirror", "Mirror: the bag and the scorecard pushed to the git remote", (6,), mirror),
)
BY_NUMBER = {phase.number: phase for phase in PHASES}
