"""The kinds of work a daughter can do, and their registry.

A kind is a function (daughter, params) -> JSON-able result that raises to fail, plus an optional
validator (params) -> params that raises ValidationError. Other apps register theirs in ready()
(apps.flows registers "flow"), so this app never imports them. The built-in kinds are `http` (call a
fleet module), `command` (run an allow-listed command) and `sleep` (wait, for drills and benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError

from apps.fleet.models import Module
from vx11_site import display, outbound

from .models import ATTEMPT_ENV, HOST, DaughterAttempt

if TYPE_CHECKING:
    from .models import Daughter

KINDS: dict[str, tuple] = {}
KIND_PERMISSIONS: dict[str, tuple[str, ...]] = {}  # what spawning a kind needs besides daughters.spawn_daughter


def register_kind(name: str, run, validate=None, permissions: tuple[str, ...] = ()) -> None:
    KINDS[name] = (run, validate)
    KIND_PERMISSIONS[name] = tuple(permissions)


def validate_params(kind: str, params) -> dict:
    if kind not in KINDS:
        raise ValidationError({"kind": f"unknown kind {kind!r}; registered kinds: {', '.join(sorted(KINDS))}"})
    if not isinstance(params, dict):
        raise ValidationError({"params": "params must be a JSON object"})
    validate = KINDS[kind][1]
    return validate(params) if validate else params


def _timeout(params: dict) -> float:
    value = params.get("timeout", 30)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 3600:
        raise ValidationError({"params": "timeout must be a number of seconds in (0, 3600]"})
    return float(value)


def validate_http(params: dict) -> dict:
    unknown = set(params) - {"module", "method", "path", "body", "expect_status", "timeout"}
    if unknown:
        raise ValidationError({"params": f"unknown http params: {', '.join(sorted(unknown))}"})
    if not Module.objects.filter(slug=params.get("module")).exists():
        raise ValidationError({"params": f"module {params.get('module')!r} is not in the fleet"})
    method = str(params.get("method", "GET")).upper()
    if method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}:
        raise ValidationError({"params": f"method {method!r} is not an HTTP method"})
    path = params.get("path", "/health")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValidationError({"params": "path must start with /"})
    expect = params.get("expect_status", 200)
    if not isinstance(expect, int) or not 100 <= expect <= 599:
        raise ValidationError({"params": "expect_status must be an HTTP status code"})
    return {**params, "method": method, "path": path, "expect_status": expect, "timeout": _timeout(params)}


def run_http(daughter: Daughter, params: dict) -> dict:
    """Call a fleet module; the answer's status must be the expected one."""
    module = Module.objects.get(slug=params["module"])
    url = module.base_url.rstrip("/") + params["path"]
    started = time.monotonic()
    try:
        with outbound.client(timeout=params["timeout"]) as client:
            response = client.request(params["method"], url, json=params.get("body"))
    except httpx.HTTPError as exc:
        refused = outbound.why(exc)
        if refused:
            raise RuntimeError(f"{params['method']} {url}: {refused}") from None
        raise
    result = {
        "url": url,
        "status_code": response.status_code,
        "latency_ms": round((time.monotonic() - started) * 1000, 2),
        "body": display.tail(response.text, 2000),
    }
    if response.status_code != params["expect_status"]:
        raise RuntimeError(
            f"{params['method']} {url} answered {response.status_code}, expected {params['expect_status']}"
        )
    return result


def validate_command(params: dict) -> dict:
    unknown = set(params) - {"command", "args", "timeout"}
    if unknown:
        raise ValidationError({"params": f"unknown command params: {', '.join(sorted(unknown))}"})
    name = params.get("command")
    if not isinstance(name, str) or name not in settings.VX11_DAUGHTER_COMMANDS:  # a list is no name (nor hashable)
        raise ValidationError(
            {
                "params": f"command {name!r} is not in the allow-list (VX11_DAUGHTER_COMMANDS): "
                f"{', '.join(sorted(settings.VX11_DAUGHTER_COMMANDS))}"
            }
        )
    args = params.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a and len(a) <= 1024 for a in args):
        raise ValidationError({"params": "args must be a list of strings"})
    return {"command": name, "args": args, "timeout": _timeout(params)}


def command_entry(name: str) -> tuple[list[str], list[str]]:
    """An allow-list entry's argument list and the environment names it asks for; an entry is
    ["argv", ...] or {"argv": [...], "env": ["NAME", ...]} (VX11_DAUGHTER_COMMANDS)."""
    entry = settings.VX11_DAUGHTER_COMMANDS[name]
    if isinstance(entry, dict):
        return list(entry["argv"]), list(entry.get("env", []))
    return list(entry), []


def command_env(names: list[str], attempt) -> dict[str, str]:
    """What a command sees of the worker's environment: PATH, LANG and the names its entry asks for. The
    worker's whole environment holds SECRET_KEY, VX11_TOKEN and the database URLs."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update({name: os.environ[name] for name in names if name in os.environ})
    if attempt:
        env[ATTEMPT_ENV] = str(attempt.pk)
    return env


def run_command(daughter: Daughter, params: dict) -> dict:
    """Run an allow-listed command as an argument list (never a shell), with a timeout and a minimal
    environment; stop it when killed. It runs in a process group of its own, and the whole group is
    killed, so a grandchild holding the output pipe can neither outlive the timeout nor keep the worker waiting."""
    argv, env_names = command_entry(params["command"])
    argv = [*argv, *params["args"]]
    attempt = getattr(daughter, "attempt", None)
    env = command_env(env_names, attempt)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    if attempt:  # should this worker die, the reaper finds the group by it
        DaughterAttempt.objects.filter(pk=attempt.pk).update(pid=proc.pid, host=HOST)
    deadline = time.monotonic() + params["timeout"]

    def kill_group() -> bytes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            return proc.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:  # a descendant that left the group still holds the pipe: stop reading
            proc.kill()
            return b""

    try:
        while True:
            try:
                output = proc.communicate(timeout=0.1)[0]
                break
            except subprocess.TimeoutExpired:
                if daughter.stop.is_set() or time.monotonic() > deadline:
                    output = kill_group()
                    if daughter.stop.is_set():
                        raise RuntimeError("stopped: the daughter was killed or reaped") from None
                    raise TimeoutError(
                        f"{argv[0]} timed out after {params['timeout']:g} s; output: {display.tail(output, 500)}"
                    ) from None
    finally:
        if proc.poll() is None:
            kill_group()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {display.tail(output, 500)}")
    return {"argv": argv, "exit_code": 0, "output": display.tail(output, settings.VX11_DAUGHTER_OUTPUT_CHARS)}


def validate_sleep(params: dict) -> dict:
    unknown = set(params) - {"seconds", "fail"}
    if unknown:
        raise ValidationError({"params": f"unknown sleep params: {', '.join(sorted(unknown))}"})
    seconds = params.get("seconds", 0)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
        raise ValidationError({"params": "seconds must be a number in [0, 3600]"})
    if params.get("fail") not in (None, True, False):
        raise ValidationError({"params": "fail must be true or false"})
    return {"seconds": seconds, "fail": bool(params.get("fail"))}


def run_sleep(daughter: Daughter, params: dict) -> dict:
    """A harmless kind for drills and benchmarks: wait, then succeed (or fail when asked)."""
    if daughter.stop.wait(params["seconds"]):
        raise RuntimeError("stopped: the daughter was killed or reaped")
    if params["fail"]:
        raise RuntimeError("failed on purpose (sleep kind with fail=true)")
    return {"slept": params["seconds"]}


register_kind("http", run_http, validate_http)
register_kind("command", run_command, validate_command)
register_kind("sleep", run_sleep, validate_sleep)
