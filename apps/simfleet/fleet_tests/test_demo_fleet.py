"""The demo fleet's own test suite: what `vx11 demo` gives the autonomy pipeline's runner phase as its test command
(VX11_PIPELINE_TESTS), so a demo run has a real JUnit report behind tests_p0_pct. It is the simulated fleet's
suite, not the portal's: it runs as its own pytest process (`-p no:django`) against the addresses the demo passes
in VX11_DEMO_FLEET_URLS ({slug: base URL}), over plain HTTP on 127.0.0.1."""

import json
import os
import urllib.request

import pytest

URLS = json.loads(os.environ.get("VX11_DEMO_FLEET_URLS", "{}"))
CORE = ("madre", "tentaculo_link", "switch", "spawner", "hormiguero")


def health(slug: str) -> tuple[int, dict]:
    with urllib.request.urlopen(f"{URLS[slug]}/health", timeout=3) as answer:
        return answer.status, json.loads(answer.read())


def test_the_demo_passed_its_fleet():
    assert set(CORE) <= set(URLS), f"VX11_DEMO_FLEET_URLS names {sorted(URLS)}"


@pytest.mark.parametrize("slug", CORE)
def test_a_core_module_answers_its_health_with_a_status(slug):
    if slug not in URLS:
        pytest.skip(f"{slug} is not in VX11_DEMO_FLEET_URLS")
    status, body = health(slug)
    assert status == 200
    assert isinstance(body.get("status"), str)
