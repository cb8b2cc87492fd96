"""`manage.py vx11 flow run|list|load`: JSON for machines, a progress bar for people, exit codes."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.flows.models import Flow


@pytest.fixture(autouse=True)
def cli_as_admin(admin_user, settings):
    """The CLI acts as a portal user: VX11_CLI_USER here (--as USER on a command line)."""
    settings.VX11_CLI_USER = admin_user.username


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("vx11_flow", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_run_a_as_json(flows):
    code, out, _ = run_cli("run", "A", "--json")
    assert code == 0
    [run] = json.loads(out)
    assert (run["flow"], run["status"], run["trigger"]) == ("A", "passed", "cli")
    assert [s["status"] for s in run["steps"]] == ["passed"] * 5


def test_run_through_the_vx11_dispatcher(flows, capsys):
    from vx11_site.management.commands.vx11 import Command as Vx11

    Vx11().run_from_argv(["manage.py", "vx11", "flow", "run", "C", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["status"] == "passed"


def test_a_failing_flow_exits_1_with_a_progress_bar_and_the_reason(flows, sim):
    sim.set_mode("hermes", "down")
    code, out, err = run_cli("run", "A", "C")
    assert code == 1
    # tqdm's bar on stderr
    assert "flow A: 100%" in err
    assert "5/5" in err
    assert "flow(s) failed: A" in err
    assert "A      failed" in out
    assert "C      passed" in out
    assert "got 502" in out


def test_an_unknown_flow_is_a_clear_error(flows):
    with pytest.raises(CommandError, match=r"unknown flow\(s\): Z; known: A, B, C") as exc:
        call_command("vx11_flow", "run", "Z")
    assert exc.value.returncode == 2


def test_an_unknown_flow_exits_2_from_the_command_line(flows, capsys):
    from vx11_site.management.commands.vx11 import Command as Vx11

    with pytest.raises(SystemExit) as exc:
        Vx11().run_from_argv(["manage.py", "vx11", "flow", "run", "Z"])
    assert exc.value.code == 2
    assert "unknown flow(s): Z" in capsys.readouterr().err


def test_list(flows):
    flows["C"].run()
    code, out, _ = run_cli("list", "--json")
    body = json.loads(out)
    assert body["contract_coherence_pct"] == 100.0
    assert {f["name"]: f["last_status"] for f in body["flows"]} == {"A": None, "B": None, "C": "passed"}


def test_load(fleet, tmp_path):
    good = tmp_path / "d.yaml"
    good.write_text("name: D\nsteps:\n  - {module: madre, path: /health}\n")
    assert run_cli("load", str(good))[1] == "loaded flow D (1 steps)\n"
    assert Flow.objects.filter(name="D").exists()

    bad = tmp_path / "e.yaml"
    bad.write_text(
        "name: E\nsteps:\n  - {module: madre, path: /health}\n  - {name: broken, module: madre, path: nope}\n"
    )
    with pytest.raises(CommandError, match=r"flow E: step 2 \(broken\): path is required") as exc:
        call_command("vx11_flow", "load", str(bad))
    assert exc.value.returncode == 2

    (tmp_path / "f.yaml").write_text("name: [unclosed\n")
    with pytest.raises(CommandError, match="f.yaml is not valid YAML/JSON"):
        call_command("vx11_flow", "load", str(tmp_path / "f.yaml"))
    with pytest.raises(CommandError, match="no such file"):
        call_command("vx11_flow", "load", str(tmp_path / "missing.yaml"))
