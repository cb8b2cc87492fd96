"""Helpers of the flows tests."""

STEP_TIMEOUT = 0.5  # seconds; VX11_FLOW_HTTP_TIMEOUT in these tests


def steps_of(run) -> list[tuple[int, str]]:
    return list(run.steps.values_list("position", "status"))


def reason_of(run, position: int) -> str:
    return run.steps.get(position=position).reason
