"""End to end over a real daphne process and a real WebSocket client, on the Redis channel layer:
auth failures, the connected message, a fleet state change (a demo module stopped for real)
broadcast to the client, and replay after reconnecting."""

import asyncio
import json

import aiohttp
import pytest
from django.db import connections

from apps.fleet.probe import run_round
from tests.helpers import TOKEN, point_fleet_at


async def refusal(url: str) -> tuple[int, str]:
    """The close code and the reason the server sent in its control message first."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            notice = await next_json(ws)
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            return msg.data, notice["error"]


async def next_json(ws, timeout=5.0) -> dict:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


def probe_and_close():
    """A probe round in a worker thread, closing that thread's DB connection after."""
    try:
        run_round()
    finally:
        connections.close_all()


@pytest.mark.services
def test_ws_end_to_end_with_a_real_state_change(daphne, sim):
    point_fleet_at(sim)
    run_round()  # everything up

    async def scenario():
        assert await refusal(f"{daphne}/ws/ops") == (4401, "auth_required")
        assert await refusal(f"{daphne}/ws/ops?token=wrong") == (4403, "forbidden")

        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{daphne}/ws/ops", headers={"X-VX11-Token": TOKEN}) as ws:
                hello = await next_json(ws)
                assert hello["type"] == "connected"
                assert hello["client_id"]

                sim.set_mode("madre", "down")
                for _ in range(3):  # down after 3 failures in a row
                    await asyncio.to_thread(probe_and_close)
                event = await next_json(ws)
                assert event["type"] == "status_changed"
                assert (event["data"]["module"], event["data"]["from"], event["data"]["to"]) == ("madre", "up", "down")
                assert event["data"]["reason"] == "3 failures in a row: connection refused"
                cursor = event["cursor"]

                await ws.send_str(json.dumps({"event_type": "tool_call_requested", "data": {"tool": "deepseek_r1"}}))
                echoed = await next_json(ws)
                assert echoed["type"] == "tool_call_requested"
                assert echoed["session_id"] == "ops"

            # a client that comes back asks for what it missed after its cursor
            async with http.ws_connect(f"{daphne}/ws/ops?token={TOKEN}&cursor={cursor}") as ws:
                assert (await next_json(ws))["type"] == "connected"
                missed = await next_json(ws)
                assert missed["type"] == "tool_call_requested"
                assert missed["replayed"] is True

    asyncio.run(scenario())
