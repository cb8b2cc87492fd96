from django.apps import AppConfig


def run_flow_daughter(daughter, params: dict) -> dict:
    """The daughters app's "flow" kind: a daughter that runs an E2E flow by name ({"flow": "A"}).
    Registered here so daughters never imports flows; a failed flow fails the daughter."""
    from .models import Flow

    name = params.get("flow") if isinstance(params, dict) else None
    flow = Flow.objects.filter(name=name).first() if isinstance(name, str) else None
    if flow is None:
        raise ValueError(f'unknown flow {name!r}; params must be like {{"flow": "A"}}')
    run = flow.run(trigger="daughter")
    if not run.passed:
        raise RuntimeError(f"flow {flow.name} failed: {run.reason}")
    return run.summary()


def validate_flow_params(params: dict) -> dict:
    """Refuse a "flow" daughter for a flow that does not exist, at spawn time."""
    from django.core.exceptions import ValidationError

    from .models import Flow

    if (
        set(params) != {"flow"}
        or not isinstance(params["flow"], str)
        or not Flow.objects.filter(name=params["flow"]).exists()
    ):
        known = ", ".join(Flow.objects.values_list("name", flat=True)) or "none"
        raise ValidationError({"params": f'params must be {{"flow": <name>}} naming an existing flow (known: {known})'})
    return params


class FlowsConfig(AppConfig):
    name = "apps.flows"
    verbose_name = "Flows"

    def ready(self):
        from apps.daughters.kinds import register_kind

        register_kind("flow", run_flow_daughter, validate_flow_params, permissions=("flows.run_flow",))
