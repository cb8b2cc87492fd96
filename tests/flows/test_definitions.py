"""Flow definitions: loaded from YAML or JSON, round-tripped, and refused with a message naming the
bad step (the loader and save_spec; the admin and API tests check their own doors). Templates whose
values are missing at run time fail the step clearly."""

import json

import pytest
from django.core.exceptions import ValidationError

from apps.flows.models import Flow, Step
from apps.flows.spec import DEFINITIONS

GOOD = {
    "name": "D",
    "title": "drill",
    "steps": [
        {
            "name": "madre health",
            "module": "madre",
            "path": "/health",
            "expect": {"json": [{"path": "$.status", "equals": "ok"}]},
            "capture": {"version": "$.version"},
        },
        {"name": "plans", "module": "madre", "path": "/madre/plans", "headers": {"X-Version": "{{ steps.1.version }}"}},
    ],
}


def with_step(step: dict, position: int = 2) -> dict:
    spec = json.loads(json.dumps(GOOD))
    spec["steps"][position - 1] = step
    return spec


def test_the_canonical_flows_are_loaded_by_the_migration(db):
    assert list(Flow.objects.values_list("name", "enabled")) == [("A", True), ("B", True), ("C", True)]
    assert [s.kind for s in Flow.objects.get(name="B").steps.all()] == ["http", "http", "spawn", "db"]


def test_a_yaml_file_and_its_json_twin_load_the_same_flow(fleet, tmp_path):
    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text(
        "name: D\nsteps:\n  - module: madre\n    path: /health\n"
        "    expect: {json: [{path: $.status, one_of: [ok, healthy]}]}\n"
    )
    flow = Flow.load_file(yaml_file)
    spec = flow.to_spec()
    assert spec["steps"] == [
        {
            "name": "step 1",
            "kind": "http",
            "module": "madre",
            "method": "GET",
            "path": "/health",
            "expect": {"status": 200, "json": [{"path": "$.status", "op": "one_of", "value": ["ok", "healthy"]}]},
        }
    ]
    json_file = tmp_path / "d.json"
    json_file.write_text(json.dumps(spec))
    assert Flow.load_file(json_file, replace=True).to_spec() == spec


def test_canonical_definitions_round_trip(fleet):
    for name in "ABC":
        flow = Flow.objects.get(name=name)
        again = Flow.save_spec(flow.to_spec(), replace=True)
        assert again.to_spec() == flow.to_spec()
        assert (DEFINITIONS / f"{name}.yaml").exists()


@pytest.mark.parametrize(
    "step, message",
    [
        (
            {"module": "madre", "path": "/x", "expect": {"json": [{"path": "$.a", "near": 1}]}},
            "step 2: expect.json[0] needs exactly one of equals, exists, one_of, regex",
        ),
        ({"module": "nosuch", "path": "/x"}, "step 2 (bad): unknown module 'nosuch'"),
        ({"module": "madre", "path": "no-slash"}, "step 2: path is required and must start with /"),
        ({"module": "madre", "path": "/x", "method": "FETCH"}, "step 2: method 'FETCH' is not one of"),
        (
            {"module": "madre", "path": "/{{ steps.3.x }}"},
            "step 2: template {{ steps.3.x }} refers to step 3, which does not run before step 2",
        ),
        (
            {"module": "madre", "path": "/{{ steps.1.plan_id }}"},
            "step 2: template {{ steps.1.plan_id }}: step 1 captures no 'plan_id' (it captures: version)",
        ),
        ({"module": "madre", "path": "/{{ steps.1 }}"}, "step 2: malformed template in '/{{ steps.1 }}'"),
        (
            {"module": "madre", "path": "/x", "capture": {"id": "$[?bad"}},
            "step 2: capture.id: invalid JSONPath '$[?bad'",
        ),
        (
            {"module": "madre", "path": "/x", "expect": {"json": [{"path": "$.a", "regex": "(("}]}},
            "step 2: expect.json[0]: invalid regex '(('",
        ),
        (
            {"module": "madre", "path": "/x", "expect": {"status": 999}},
            "step 2: expect.status must be an integer of at least 100 and at most 599",
        ),
        ({"module": "madre", "path": "/x", "colour": "red"}, "step 2: unknown step key(s): colour"),
        ({"db": {"model": "nosuch.Model", "filter": {"id": 1}}}, "step 2: unknown model 'nosuch.Model'"),
        (
            {"db": {"model": "fleet.Module", "filter": {"colour": 1}}},
            "step 2: db.filter: fleet.Module has no field 'colour'",
        ),
        ({"db": {"model": "fleet.Module", "filter": {}}}, "step 2: db.filter is required"),
        ({"spawn": {"params": {}}}, "step 2: spawn.kind is required"),
        ({"kind": "teleport"}, "step 2: unknown kind 'teleport'"),
    ],
)
def test_a_bad_step_is_refused_naming_it(fleet, step, message):
    if "module" in step and step.get("module") == "nosuch":
        step = {**step, "name": "bad"}
    with pytest.raises(ValidationError) as exc:
        Flow.save_spec(with_step(step))
    assert message in exc.value.messages[0], exc.value.messages[0]
    assert exc.value.messages[0].startswith("flow D: step 2")
    assert not Flow.objects.filter(name="D").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "bad name!", "steps": GOOD["steps"]}, "flow name 'bad name!' must be 1-32 letters"),
        ({"name": "D", "steps": []}, "flow D: steps must be a list of 1 to 50 steps"),
        ({"name": "D", "steps": GOOD["steps"], "owner": "me"}, "unknown flow key(s): owner"),
        ([1, 2], "a flow definition must be an object"),
    ],
)
def test_a_bad_flow_is_refused(fleet, spec, message):
    with pytest.raises(ValidationError) as exc:
        Flow.save_spec(spec)
    assert message in exc.value.messages[0]


def test_an_existing_flow_is_replaced_only_when_asked(fleet):
    Flow.save_spec(GOOD)
    with pytest.raises(ValidationError, match="flow D already exists"):
        Flow.save_spec(GOOD)
    changed = {**GOOD, "title": "changed", "steps": GOOD["steps"][:1]}
    assert Flow.save_spec(changed, replace=True).steps.count() == 1


def test_a_template_whose_value_is_null_fails_the_step_clearly(flows):
    """manifestator's /drift without a correlation id answers "correlation_id": null."""
    flow = Flow.save_spec(
        {
            "name": "T",
            "steps": [
                {"name": "drift", "module": "manifestator", "path": "/drift", "capture": {"cid": "$.correlation_id"}},
                {
                    "name": "patch",
                    "module": "manifestator",
                    "method": "POST",
                    "path": "/generate-patch",
                    "body": {"correlation_id": "{{ steps.1.cid }}"},
                },
            ],
        }
    )
    run = flow.run()
    assert run.failed_step == 2
    assert run.steps.get(position=2).reason == "template {{ steps.1.cid }}: step 1 captured 'cid' as null"


def test_a_template_of_an_unset_environment_variable_fails_the_step(flows, monkeypatch):
    monkeypatch.delenv("VX11_FLOW_TEST_TOKEN", raising=False)
    flow = Flow.save_spec(
        {
            "name": "T",
            "steps": [
                {
                    "name": "with a token",
                    "module": "madre",
                    "path": "/health",
                    "headers": {"X-VX11-Token": "{{ env.VX11_FLOW_TEST_TOKEN }}"},
                }
            ],
        }
    )
    run = flow.run()
    assert (
        run.steps.get(position=1).reason
        == "template {{ env.VX11_FLOW_TEST_TOKEN }}: environment variable VX11_FLOW_TEST_TOKEN is not set"
    )

    monkeypatch.setenv("VX11_FLOW_TEST_TOKEN", "s3cret")
    run = flow.run()
    assert run.status == "passed"
    assert run.steps.get(position=1).request["headers"] == {"X-VX11-Token": "***"}  # never stored


def test_a_capture_missing_at_run_time_fails_the_step(flows):
    """A step edited behind validation's back (straight in the database) still fails clearly."""
    flow = Flow.save_spec(GOOD)
    Step.objects.filter(flow=flow, position=2).update(headers={"X-Version": "{{ steps.1.nope }}"})
    run = flow.run()
    assert (
        run.steps.get(position=2).reason
        == "template {{ steps.1.nope }}: step 1 captured no value 'nope' (captured: version)"
    )


def test_a_capture_that_matches_nothing_fails_the_step(flows):
    flow = Flow.save_spec(
        {"name": "T", "steps": [{"module": "madre", "path": "/health", "capture": {"x": "$.nothing.here"}}]}
    )
    run = flow.run()
    assert run.steps.get(position=1).reason == "capture x: $.nothing.here matched nothing in the response"


def test_excerpts_are_bounded(flows, settings):
    settings.VX11_FLOW_EXCERPT_CHARS = 50
    run = Flow.objects.get(name="A").run()
    tools = run.steps.get(position=3).response_excerpt
    assert tools.startswith('{"cli_tools"')
    assert len(tools) < 90
    assert "more characters]" in tools


def test_latency_bound(flows, sim):
    sim.set_mode("madre", "slow", delay=0.2)
    flow = Flow.save_spec(
        {"name": "T", "steps": [{"module": "madre", "path": "/health", "expect": {"max_latency_ms": 100}}]}
    )
    reason = flow.run().steps.get(position=1).reason
    assert reason.startswith("took ") and reason.endswith("ms, over the bound of 100 ms")


def test_an_oversized_answer_fails_the_step(flows, monkeypatch):
    import apps.flows.runner as runner

    monkeypatch.setattr(runner, "MAX_RESPONSE_BYTES", 150)
    run = Flow.objects.get(name="A").run()
    assert run.failed_step == 3
    assert run.steps.get(position=3).reason == "response larger than 150 bytes; not read further"


@pytest.mark.parametrize(
    "step, message",
    [
        (
            {"module": "madre", "path": "/x", "timeout": float("nan")},
            "step 2: timeout is nan: numbers must be finite (NaN and Infinity are not JSON)",
        ),
        (
            {"module": "madre", "path": "/x", "expect": {"max_latency_ms": float("inf")}},
            "step 2: expect.max_latency_ms is inf: numbers must be finite",
        ),
        (
            {"module": "madre", "path": "/x", "body": {"n": [1, float("nan")]}},
            "step 2: body.n[1] is nan: numbers must be finite",
        ),
        (
            {"module": "madre", "path": "/x", "expect": {"json": [{"path": "$.a", "equals": float("-inf")}]}},
            "step 2: expect.json[0].equals is -inf",
        ),
        (
            {"db": {"model": "fleet.Module", "filter": {"id": 1}, "within": float("nan")}},
            "step 2: db.within is nan: numbers must be finite",
        ),
        ({"spawn": {"kind": "sleep", "params": {"seconds": float("inf")}}}, "step 2: spawn.params.seconds is inf"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_step(fleet, step, message):
    with pytest.raises(ValidationError) as exc:
        Flow.save_spec(with_step(step))
    assert message in exc.value.messages[0], exc.value.messages[0]


@pytest.mark.parametrize("kind", ["flow", "Flow"])
def test_a_spawn_step_may_not_start_a_flow(fleet, kind):
    """A flow spawning a `flow` daughter naming itself (or A -> B -> A) would spawn forever: refused."""
    step = {"name": "again", "spawn": {"kind": kind, "params": {"flow": "D"}}}
    with pytest.raises(ValidationError) as exc:
        Flow.save_spec(with_step(step))
    assert exc.value.messages[0].startswith(
        "flow D: step 2 (again): spawn.kind 'flow' is refused: a flow may not start flows"
    )


def test_a_spawn_step_of_kind_flow_edited_behind_validation_fails(flows):
    flow = Flow.save_spec(
        {"name": "T", "steps": [{"name": "again", "spawn": {"kind": "sleep", "params": {"seconds": 0}}}]}
    )
    Step.objects.filter(flow=flow).update(spawn={"kind": "flow", "params": {"flow": "T"}, "source": "madre"})
    run = flow.run()
    assert run.steps.get().reason == "spawn.kind 'flow' is refused: a flow may not start flows"


def test_the_migration_rows_and_the_yaml_definitions_agree():
    """Migration 0002 carries the canonical steps as frozen literal rows, and 0006 adds flow C's fifth step; the
    YAML files stay the source of `vx11 flow load`. If one changes without the other, this says which flow and
    field drifted."""
    import importlib

    from apps.flows.spec import CANONICAL, check_spec, parse_file

    migration = importlib.import_module("apps.flows.migrations.0002_canonical_flows")
    patch_plan = importlib.import_module("apps.flows.migrations.0006_flow_c_patch_plan")
    frozen = {spec["name"]: spec for spec in migration.FLOWS}
    frozen["C"] = {
        **frozen["C"],
        "description": patch_plan.DESCRIPTION,
        "steps": [*frozen["C"]["steps"], patch_plan.STEP_5],
    }
    assert tuple(frozen) == CANONICAL == migration.CANONICAL
    for name in CANONICAL:
        path = DEFINITIONS / f"{name}.yaml"
        spec = check_spec(parse_file(path.read_text(), path.name))
        rows = [{**migration.STEP_DEFAULTS, **row} for row in frozen[name]["steps"]]
        assert rows == [Step.fields_from(step) for step in spec["steps"]], (
            f"flow {name}: migration 0002 and {path.name} differ"
        )
        assert {k: frozen[name][k] for k in ("title", "description", "enabled")} == {
            k: spec[k] for k in ("title", "description", "enabled")
        }


def test_migration_0006_adds_flow_c_s_fifth_step_only_to_an_unedited_flow(db):
    """A database migrated before flow C checked the patch plan gets the step; an operator's edited flow C is
    left as it is, both ways."""
    import importlib

    from django.apps import apps

    patch_plan = importlib.import_module("apps.flows.migrations.0006_flow_c_patch_plan")
    flow = Flow.objects.get(name="C")
    now = flow.to_spec()
    patch_plan.remove_step(apps, None)
    assert [s.position for s in flow.steps.all()] == [1, 2, 3, 4]
    assert Flow.objects.get(name="C").description == patch_plan.BEFORE["description"]

    patch_plan.add_step(apps, None)
    assert Flow.objects.get(name="C").to_spec() == now

    patch_plan.remove_step(apps, None)
    Step.objects.filter(flow=flow, position=4).update(timeout=9)
    patch_plan.add_step(apps, None)
    assert flow.steps.count() == 4
    Step.objects.filter(flow=flow, position=4).update(timeout=None)
    patch_plan.add_step(apps, None)
    Step.objects.filter(flow=flow, position=5).update(name="mine")
    patch_plan.remove_step(apps, None)
    assert flow.steps.count() == 5


def test_the_migrated_flows_match_the_yaml_definitions(db):
    """What migrate stored (this test database) is what loading the YAML stores."""
    from apps.flows.spec import check_spec, parse_file

    for flow in Flow.objects.all():
        path = DEFINITIONS / f"{flow.name}.yaml"
        spec = check_spec(parse_file(path.read_text(), path.name))
        steps = [Step(**Step.fields_from(step)).to_spec() for step in spec["steps"]]
        assert flow.to_spec() == {**{k: spec[k] for k in ("name", "title", "description", "enabled")}, "steps": steps}
