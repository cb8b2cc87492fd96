"""The admin's fleet page in a real headless Chromium: a demo module is stopped, the probe rounds
see it, and the status badge turns "down" without a reload (WebSocket, Redis layer, real daphne)."""

import pytest

from apps.fleet.probe import run_round
from tests.e2e.helpers import chrome, log_in_live
from tests.helpers import point_fleet_at


@pytest.mark.services
def test_badge_turns_down_live_without_reload(daphne, sim, admin_user):
    from selenium.webdriver.common.by import By

    point_fleet_at(sim)
    run_round()
    browser = chrome()
    try:
        wait = log_in_live(browser, daphne, "/admin/fleet/module/")
        badge = browser.find_element(By.CSS_SELECTOR, '.vx11-badge[data-module="madre"]')
        assert badge.text == "up"
        up_before = int(browser.find_element(By.CSS_SELECTOR, '[data-count="up"]').text)

        sim.set_mode("madre", "down")
        for _ in range(3):
            run_round()

        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, '.vx11-badge[data-module="madre"]').text == "down")
        assert browser.execute_script("return window.__not_reloaded === true;")
        assert int(browser.find_element(By.CSS_SELECTOR, '[data-count="up"]').text) == up_before - 1
        assert int(browser.find_element(By.CSS_SELECTOR, '[data-count="down"]').text) == 1
        assert "madre: up → down" in browser.find_element(By.ID, "vx11-live-log").text
    finally:
        browser.quit()


@pytest.mark.services
def test_daughter_and_task_badges_follow_events_without_reload(daphne, admin_user):
    """A task's page in the browser: its daughter is killed (one reaper-style sweep event) and its
    task is cancelled (plan_updated); both badges change without a reload."""
    from selenium.webdriver.common.by import By

    from apps.daughters.models import Daughter, DaughterTask

    task = DaughterTask.spawn("sleep", {"seconds": 60})  # no worker: it waits queued
    daughter = task.daughters.get()
    browser = chrome()
    try:
        wait = log_in_live(browser, daphne, f"/admin/daughters/daughtertask/{task.pk}/change/")
        assert browser.find_element(By.CSS_SELECTOR, f'[data-daughter="{daughter.pk}"]').text == "spawned"

        task.cancel()

        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f'[data-daughter="{daughter.pk}"]').text == "killed")
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f'[data-task="{task.pk}"]').text == "cancelled")
        assert browser.execute_script("return window.__not_reloaded === true;")
        assert Daughter.objects.get(pk=daughter.pk).status == "killed"
    finally:
        browser.quit()
