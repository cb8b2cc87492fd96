"""The guardrail self-check: does each power guard still refuse what it must, through the real perform()?

Each case is an ordinary perform() call by the acting user under a manager.Policy of its own (never by changing
django.conf.settings, which the other tasks of the worker share), and each refusal is an ordinary audited
PowerAction row. Nothing in the fleet changes: for the whole check the target module's ServiceControl claim is
held, so even a guard that lets an applied request through stops at the claim (409 "another action is running")
and no backend runs; the case then fails, saying so. The protected-stop cases are plans (apply=False), which never
run a backend either.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from . import manager
from .manager import NEVER_STOP, Policy
from .models import ServiceControl

CLAIM_NOTE = "guardrail self-check by the pipeline"
CLAIM_REFUSAL = "another action is running"  # the start of perform()'s 409 when the claim is held


@dataclass(frozen=True)
class Case:
    name: str
    guard: str  # the guard that must refuse, in words
    slug: str | None  # None: the target
    action: str
    apply: bool
    policy: Policy
    expected: int
    says: str  # a fragment only that guard's message has


def cases_for(rate_limit: int) -> list[Case]:
    """Each case turns off every guard but its own, so a broken guard falls through to the held claim."""
    only_control = Policy(allow_control=False, windows=False, rate_limit=rate_limit)
    only_windows = Policy(allow_control=True, windows=True, rate_limit=rate_limit)
    only_rate = Policy(allow_control=True, windows=False, rate_limit=0)
    plans = Policy(allow_control=True, windows=False, rate_limit=rate_limit)
    return [
        Case("control_off", "service control", None, "restart", True, only_control, 403, "service control is disabled"),
        Case("no_window", "maintenance window", None, "restart", True, only_windows, 409, "no open maintenance window"),
        *(
            Case(f"protected_stop_{slug}", "never-stop", slug, "stop", False, plans, 403, "cannot be stopped")
            for slug in NEVER_STOP
        ),
        Case("rate_limit", "rate limit", None, "restart", True, only_rate, 429, "rate limit"),
    ]


def find_target(slug: str | None) -> tuple[ServiceControl | None, bool]:
    """The module the applied cases aim at, and whether an open maintenance window covers it now. Without `slug`:
    the first controllable module (by slug) but madre and tentaculo_link that no open window covers, else the
    first covered one. ValueError for a `slug` that is not such a module."""
    controls = ServiceControl.objects.select_related("module").exclude(module__slug__in=NEVER_STOP)
    covered = manager.modules_in_window(timezone.now())
    if slug is not None:
        if slug in NEVER_STOP:
            raise ValueError(f"the self-check cannot aim at {slug}: {', '.join(NEVER_STOP)} are the protected modules")
        control = controls.filter(module__slug=slug).first()
        if control is None:
            raise ValueError(f"the self-check needs a module with a control backend; '{slug}' has none")
        return control, control.module_id in covered
    found = list(controls.order_by("module__slug"))
    free = [c for c in found if c.module_id not in covered]
    if free:
        return free[0], False
    return (found[0], True) if found else (None, False)


def skip_reason(case: Case, control: ServiceControl | None, held: bool, covered: bool, chosen: bool) -> str | None:
    if not case.apply:
        return None  # a plan never runs a backend: safe without the claim
    if control is None:
        return f"no module but {' and '.join(NEVER_STOP)} has a control backend: no applied case can run"
    if not held:
        return (
            f"{control.slug} is busy with another action ({control.busy_with}): the self-check could not hold its "
            "claim, so only the plan-mode cases ran"
        )
    if case.name == "no_window" and covered:
        if chosen:
            return f"{control.slug} is in an open maintenance window"
        return "every controllable module is in an open maintenance window"
    return None


def run_case(user, case: Case, control: ServiceControl | None) -> dict:
    slug = case.slug or control.slug
    row = manager.perform(user, slug, case.action, case.apply, policy=case.policy)
    got, message = row.http_status, row.message
    result = {
        "name": case.name,
        "expected": case.expected,
        "got": got,
        "message": message,
        "ok": got == case.expected and case.says in message,
        "action": row.pk,
        "skipped": None,
        "failure": None,
    }
    if result["ok"]:
        return result
    if case.apply and got == 409 and message.startswith(CLAIM_REFUSAL):
        if case.name == "no_window" and control.module_id in manager.modules_in_window(timezone.now()):
            # a window opened over the target during the check: the guard rightly let it pass
            result.update(ok=None, skipped=f"a maintenance window opened over {slug} during the check")
            return result
        result["failure"] = (
            f"the {case.guard} guard let it through: only the self-check's claim on {slug} refused it "
            f"(409 {CLAIM_REFUSAL}); no backend ran"
        )
    else:
        result["failure"] = f"expected {case.expected} '{case.says}' from the {case.guard} guard, got {got}: {message}"
    return result


def summarise(cases: list[dict]) -> str:
    ran = [c for c in cases if c["ok"] is not None]
    passed = [c for c in ran if c["ok"]]
    parts = [f"{len(passed)} of {len(ran)} guards refused as they must"]
    failed = [c["name"] for c in ran if not c["ok"]]
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    skipped = [c for c in cases if c["ok"] is None]
    if skipped:
        reasons = "; ".join(f"{c['name']}: {c['skipped']}" for c in skipped)
        parts.append(f"{len(skipped)} skipped ({reasons})")
    return "; ".join(parts)


def check_guardrails(user, *, target: str | None = None) -> dict:
    """Ask perform() for what every guard must refuse, as `user` (who needs power.control_services), and check
    that the guard meant refused it: the status and the guard's own message.

    Answer: {"ok": bool, "target": slug | None, "summary": "5 of 5 guards refused as they must",
    "cases": [{"name", "expected", "got", "message", "ok", "action", "skipped", "failure"}]}, the cases being
    control_off (403), no_window (409), protected_stop_madre and protected_stop_tentaculo_link (403, plans),
    rate_limit (429). A case that ran: `ok` True or False, `got` and `message` the PowerAction's status and
    message, `action` its id (None when beyond the refusal audit cap, so not stored), `failure` why it failed
    (None when ok). A case skipped: `ok` None, `skipped` the reason - no target (no controllable module but the
    protected ones), the target's claim held by a real action (then only the plans run), or the target in an open
    window (no_window only; `got` and `action` are set when that window opened during the check, else None).
    `ok` is True when no case failed (a skipped case is not a failure; the summary names it).

    `target`: the module the applied cases aim at (default: see find_target); ValueError if it has no control
    backend or is madre or tentaculo_link.
    """
    control, covered = find_target(target)
    held = control is not None and control.claim(CLAIM_NOTE)
    if control is not None and not held:
        control.refresh_from_db(fields=["busy_since", "busy_with"])
    cases = []
    try:
        for case in cases_for(Policy.current().rate_limit):
            reason = skip_reason(case, control, held, covered, chosen=target is not None)
            if reason:
                cases.append(
                    {
                        "name": case.name,
                        "expected": case.expected,
                        "got": None,
                        "message": "",
                        "ok": None,
                        "action": None,
                        "skipped": reason,
                        "failure": None,
                    }
                )
            else:
                cases.append(run_case(user, case, control))
    finally:
        if held:
            control.release()
    return {
        "ok": not any(c["ok"] is False for c in cases),
        "target": control.slug if control else None,
        "summary": summarise(cases),
        "cases": cases,
    }
