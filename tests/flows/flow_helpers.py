"""Small helpers shared by the flows tests (imported as a plain module: tests/ has no packages)."""

STEP_TIMEOUT = 0.5  # seconds; VX11_FLOW_HTTP_TIMEOUT in these tests


def steps_of(run) -> list[tuple[int, str]]:
    return list(run.steps.values_list("position", "status"))


def reason_of(run, position: int) -> str:
    return run.steps.get(position=position).reason
