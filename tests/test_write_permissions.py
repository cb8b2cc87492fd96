"""Every write needs the Django permission of what it changes, in the API, the admin and the CLI, refused
with one message: `<what> needs the permission <perm>; user '<name>' does not have it` (403 in the API).

A read-write key only says its holder may write at all; a user without permissions can still read."""

import getpass
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from apps.daughters.models import Daughter, DaughterTask
from apps.fleet.models import HealthCheck, Module
from apps.flows.models import Flow, FlowRun
from apps.power.models import PowerAction

pytestmark = pytest.mark.django_db

NEW_MODULE = {"slug": "edge-cache", "name": "Edge cache", "base_url": "http://127.0.0.1:9100"}
D_FLOW = {"name": "D", "steps": [{"module": "madre", "path": "/health"}]}
SLEEP = {"kind": "sleep", "params": {"seconds": 1}}


def refusal(what: str, perm: str, user: str = "plain") -> str:
    return f"{what} needs the permission {perm}; user '{user}' does not have it"


@pytest.fixture
def plain(plain_key):
    return Client(headers={"Authorization": f"Bearer {plain_key}"})


@pytest.fixture
def task(db):
    """A task whose daughter waits (no worker here): live, so cancelling it would kill it."""
    return DaughterTask.spawn("sleep", {"seconds": 1}, description="waiting")


def writes(task) -> list[tuple]:
    """Each API write: method, path, body, what the refusal says, the permission it needs."""
    daughter = task.daughters.get()
    return [
        ("post", "/api/modules", NEW_MODULE, "creating a module", "fleet.add_module"),
        ("patch", "/api/modules/hermes", {"name": "renamed"}, "changing a module", "fleet.change_module"),
        ("delete", "/api/modules/hermes", None, "deleting a module", "fleet.delete_module"),
        ("post", "/api/modules/hermes/probe", None, "probing a module", "fleet.change_module"),
        ("post", "/api/probe", None, "probing the fleet", "fleet.change_module"),
        ("post", "/api/flows", D_FLOW, "creating a flow", "flows.add_flow"),
        ("put", "/api/flows/A", D_FLOW | {"name": "A"}, "replacing a flow", "flows.change_flow"),
        ("post", "/api/flows/A/run", None, "running a flow", "flows.run_flow"),
        ("post", "/api/flows/A/run?wait=false", None, "running a flow", "flows.run_flow"),
        ("post", "/api/daughters", SLEEP, "spawning a daughter", "daughters.spawn_daughter"),
        ("post", f"/api/daughters/tasks/{task.pk}/cancel", None, "cancelling a task", "daughters.change_daughtertask"),
        ("post", f"/api/daughters/{daughter.pk}/cancel", None, "killing a daughter", "daughters.change_daughter"),
        (
            "post",
            "/madre/power/window/open",
            {"services": ["switch"], "ttl_sec": 60},
            "opening a power window",
            "power.control_services",
        ),
        ("post", "/api/power/service/switch/stop", {}, "planning stop switch", "power.control_services"),
    ]


def send(client, method, path, body=None):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, content_type="application/json")


def world() -> dict:
    """What a refused write must leave as it was."""
    return {
        "modules": sorted(Module.objects.values_list("slug", "name")),
        "checks": HealthCheck.objects.count(),
        "flows": sorted(Flow.objects.values_list("name", "updated")),
        "runs": FlowRun.objects.count(),
        "tasks": DaughterTask.objects.count(),
        "daughters": sorted(Daughter.objects.values_list("id", "status")),
    }


def test_a_plain_users_read_write_key_is_refused_every_write_and_changes_nothing(plain, task):
    before = world()
    for method, path, body, what, perm in writes(task):
        response = send(plain, method, path, body)
        assert response.status_code == 403, (path, response.content)
        assert response.json() == {"detail": refusal(what, perm)}, path
    assert world() == before
    assert PowerAction.objects.filter(http_status=403, user__username="plain").count() == 2  # power refusals: audited
    for path in ("/api/modules", "/api/flows/A", f"/api/daughters/tasks/{task.pk}"):
        assert plain.get(path).status_code == 200, path


def test_each_write_needs_its_own_permission_not_a_neighbours(plain_key, grant, django_user_model, task):
    """Holding one permission opens that write only: the refusal is per permission, not 'has any'."""
    user = django_user_model.objects.get(username="plain")
    grant(user, "fleet.add_module", "flows.run_flow", "daughters.spawn_daughter")
    client = Client(headers={"Authorization": f"Bearer {plain_key}"})
    assert send(client, "post", "/api/modules", NEW_MODULE).status_code == 201
    changed = send(client, "patch", "/api/modules/edge-cache", {"name": "x"})
    assert changed.json() == {"detail": refusal("changing a module", "fleet.change_module")}
    assert send(client, "post", "/api/flows/C/run?wait=false").status_code == 202
    assert send(client, "post", "/api/daughters", SLEEP).status_code == 201
    assert send(client, "post", f"/api/daughters/tasks/{task.pk}/cancel").status_code == 403


def test_a_flow_daughter_runs_a_flow_so_it_also_needs_run_flow(plain_key, grant, django_user_model):
    grant(django_user_model.objects.get(username="plain"), "daughters.spawn_daughter")
    client = Client(headers={"Authorization": f"Bearer {plain_key}"})
    response = send(client, "post", "/api/daughters", {"kind": "flow", "params": {"flow": "A"}})
    assert response.status_code == 403
    assert response.json() == {"detail": refusal("spawning a flow daughter", "flows.run_flow")}
    assert not DaughterTask.objects.exists()
    grant(django_user_model.objects.get(username="plain"), "flows.run_flow")
    assert send(client, "post", "/api/daughters", {"kind": "flow", "params": {"flow": "A"}}).status_code == 201


def test_a_staff_session_without_the_permission_is_refused_too(django_user_model):
    staff = django_user_model.objects.create_user("desk", password=None, is_staff=True)
    client = Client()
    client.force_login(staff)
    response = send(client, "post", "/api/modules", NEW_MODULE)
    assert response.status_code == 403
    assert response.json() == {"detail": refusal("creating a module", "fleet.add_module", "desk")}


# --- the admin ------------------------------------------------------------------------------------


@pytest.fixture
def desk(django_user_model, grant):
    """A staff user who may see everything the actions touch, and nothing more."""
    user = django_user_model.objects.create_user("desk", password=None, is_staff=True)
    grant(user, "fleet.view_module", "flows.view_flow", "daughters.view_daughtertask", "daughters.view_daughter")
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def act(client, changelist: str, action: str, pks) -> None:
    client.post(reverse(f"admin:{changelist}_changelist"), {"action": action, "_selected_action": list(pks)})


def test_admin_actions_need_their_permission(desk, grant, fleet, task):
    daughter = task.daughters.get()
    act(desk, "fleet_module", "probe_now", [fleet["hermes"].pk])
    act(desk, "flows_flow", "run_now", Flow.objects.values_list("pk", flat=True))
    act(desk, "daughters_daughtertask", "cancel_tasks", [task.pk])
    act(desk, "daughters_daughter", "kill_daughters", [daughter.pk])
    assert (HealthCheck.objects.count(), FlowRun.objects.count()) == (0, 0)
    assert Daughter.objects.get(pk=daughter.pk).status == Daughter.Status.SPAWNED
    assert "probe_now" not in desk.get(reverse("admin:fleet_module_changelist")).content.decode()  # not even offered

    grant(desk.user, "fleet.change_module", "flows.run_flow", "daughters.change_daughter")
    act(desk, "fleet_module", "probe_now", [fleet["hermes"].pk])
    act(desk, "flows_flow", "run_now", Flow.objects.filter(name="A").values_list("pk", flat=True))
    act(desk, "daughters_daughter", "kill_daughters", [daughter.pk])
    assert (HealthCheck.objects.count(), FlowRun.objects.count()) == (1, 1)
    assert Daughter.objects.get(pk=daughter.pk).status == Daughter.Status.KILLED


def test_admin_cancel_of_a_task_needs_change_daughtertask(desk, grant, task):
    grant(desk.user, "daughters.change_daughtertask")
    act(desk, "daughters_daughtertask", "cancel_tasks", [task.pk])
    assert task.daughters.get().status == Daughter.Status.KILLED


def test_admin_run_button_needs_run_flow(desk, grant):
    flow = Flow.objects.get(name="A")
    page = desk.get(reverse("admin:flows_flow_change", args=[flow.pk])).content.decode()
    assert 'data-action="run-flow"' not in page
    assert desk.post(reverse("admin:flows_flow_run", args=[flow.pk])).status_code == 403
    assert not FlowRun.objects.exists()
    grant(desk.user, "flows.run_flow")
    assert 'data-action="run-flow"' in desk.get(reverse("admin:flows_flow_change", args=[flow.pk])).content.decode()
    assert desk.post(reverse("admin:flows_flow_run", args=[flow.pk])).status_code == 302
    assert FlowRun.objects.get().triggered_by == desk.user


def test_admin_spawn_page_needs_spawn_daughter_and_a_flow_daughter_run_flow(desk, grant):
    add = reverse("admin:daughters_daughtertask_add")
    form = {"kind": "flow", "params": '{"flow": "A"}', "source": "operator", "max_retries": "0", "count": "1"}
    grant(desk.user, "daughters.add_daughtertask")  # the model's add permission is not spawning
    assert desk.get(add).status_code == 403
    assert desk.post(add, form).status_code == 403
    grant(desk.user, "daughters.spawn_daughter")
    response = desk.post(add, form)
    assert response.status_code == 200
    assert "spawning a flow daughter needs the permission flows.run_flow" in response.content.decode()
    assert not DaughterTask.objects.exists()
    assert desk.post(add, form | {"kind": "sleep", "params": '{"seconds": 1}'}).status_code == 302
    assert DaughterTask.objects.get().created_by == desk.user


def test_schedule_actions_need_change_periodictask(desk, grant):
    """django-celery-beat's own enable/disable/toggle/run actions declare no permission; the portal's admin adds it."""
    from django_celery_beat.models import PeriodicTask

    grant(desk.user, "django_celery_beat.view_periodictask")
    schedule = PeriodicTask.objects.get(name="flows: run flow A")
    assert schedule.enabled
    act(desk, "django_celery_beat_periodictask", "disable_tasks", [schedule.pk])
    assert PeriodicTask.objects.get(pk=schedule.pk).enabled
    page = desk.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()
    # not offered either
    assert "run_tasks" not in page
    assert "toggle_tasks" not in page
    grant(desk.user, "django_celery_beat.change_periodictask")
    act(desk, "django_celery_beat_periodictask", "disable_tasks", [schedule.pk])
    assert not PeriodicTask.objects.get(pk=schedule.pk).enabled


def test_an_api_key_for_someone_else_needs_change_user(desk, grant, admin_user):
    """A key acts as its user: whoever may add keys may not mint one for the superuser, nor reopen another's key."""
    from apps.accounts.models import ApiKey

    grant(desk.user, "accounts.add_apikey", "accounts.change_apikey", "accounts.view_apikey")
    add = reverse("admin:accounts_apikey_add")
    assert desk.post(add, {"user": admin_user.pk, "name": "mine now"}).status_code == 200  # not a valid choice
    assert not ApiKey.objects.filter(user=admin_user).exists()
    assert desk.post(add, {"user": desk.user.pk, "name": "own"}).status_code == 302
    theirs = ApiKey.issue(admin_user, "admin ro", read_only=True)[0]
    change = reverse("admin:accounts_apikey_change", args=[theirs.pk])
    assert desk.post(change, {"user": admin_user.pk, "name": "admin ro"}).status_code == 403
    assert ApiKey.objects.get(pk=theirs.pk).read_only
    grant(desk.user, "auth.change_user")
    assert desk.post(add, {"user": admin_user.pk, "name": "on behalf"}).status_code == 302


# --- the CLI --------------------------------------------------------------------------------------


def cli(*argv, **options):
    call_command(*argv, stdout=io.StringIO(), stderr=io.StringIO(), **options)


def test_the_cli_acts_as_a_named_user_and_needs_its_permissions(plain_key, grant, django_user_model, tmp_path):
    definition = tmp_path / "d.yaml"
    definition.write_text("name: D\nsteps:\n  - {module: madre, path: /health}\n")
    cases = [
        (("vx11_spawn", "sleep", "seconds:=1"), "spawning a daughter", "daughters.spawn_daughter"),
        (("vx11_spawn", "flow", "flow=A"), "spawning a flow daughter", "daughters.spawn_daughter"),
        (("vx11_flow", "run", "A"), "running a flow", "flows.run_flow"),
        (("vx11_flow", "load", str(definition)), "loading a flow", "flows.add_flow"),
    ]
    for argv, what, perm in cases:
        with pytest.raises(CommandError) as refused:
            cli(*argv, "--as", "plain")
        assert str(refused.value) == refusal(what, perm)
        assert refused.value.returncode == 2
    assert not DaughterTask.objects.exists()
    assert not FlowRun.objects.exists()
    assert not Flow.objects.filter(name="D").exists()

    grant(django_user_model.objects.get(username="plain"), "daughters.spawn_daughter")
    with pytest.raises(CommandError, match=refusal("spawning a flow daughter", "flows.run_flow")):
        cli("vx11_spawn", "flow", "flow=A", "--as", "plain")
    cli("vx11_spawn", "sleep", "seconds:=1", "--as", "plain")
    assert DaughterTask.objects.get().created_by.username == "plain"


def test_the_cli_user_is_vx11_cli_user_else_the_os_login(settings, django_user_model, grant, tmp_path):
    definition = tmp_path / "d.yaml"
    definition.write_text("name: D\nsteps:\n  - {module: madre, path: /health}\n")
    settings.VX11_CLI_USER = ""
    login = getpass.getuser()
    with pytest.raises(CommandError, match=f"no active portal user '{login}': pass --as USER"):
        cli("vx11_flow", "load", str(definition))
    grant(django_user_model.objects.create_user(login, password=None), "flows.add_flow")
    settings.VX11_CLI_USER = "ghost"
    with pytest.raises(CommandError, match="no active portal user 'ghost'"):
        cli("vx11_flow", "load", str(definition))
    settings.VX11_CLI_USER = ""
    cli("vx11_flow", "load", str(definition))
    assert Flow.objects.filter(name="D").exists()
    with pytest.raises(CommandError, match=refusal("loading a flow", "flows.change_flow", login)):
        cli("vx11_flow", "load", str(definition), "--replace")


def test_a_refusal_is_one_line_and_exit_2_on_the_command_line(plain_key, capsys):
    from vx11_site.management.commands.vx11 import Command as Vx11

    with pytest.raises(SystemExit) as exit_:
        Vx11().run_from_argv(["manage.py", "vx11", "spawn", "sleep", "seconds:=1", "--as", "plain"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.strip() == f"CommandError: {refusal('spawning a daughter', 'daughters.spawn_daughter')}"
