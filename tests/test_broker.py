"""The embedded broker (vx11_site.broker): whole messages only, each delivered once, none kept after delivery."""

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

from kombu import Connection

import vx11_site.celery  # noqa: F401  registers the vx11sqla transport
from tests.helpers import ROOT

OPTIONS = {"connect_args": {"timeout": 30}}

PRODUCER = """
import sys
import vx11_site.celery
from kombu import Connection
url, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Connection(url, transport_options={"connect_args": {"timeout": 30}}) as conn:
    queue = conn.SimpleQueue("jobs")
    for n in range(count):
        queue.put({"id": f"{tag}-{n}", "pad": "x" * 2000})
"""

CONSUMER = """
import sys
from queue import Empty
import vx11_site.celery
from kombu import Connection
url, idle_limit = sys.argv[1], 6
with Connection(url, transport_options={"connect_args": {"timeout": 30}}) as conn:
    queue = conn.SimpleQueue("jobs")
    idle = 0
    while idle < idle_limit:
        try:
            message = queue.get(timeout=0.5)
        except Empty:
            idle += 1
            continue
        idle = 0
        print(message.payload["id"], flush=True)
        message.ack()
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM kombu_message").fetchone()[0]


def test_concurrent_producers_and_consumers_deliver_every_message_once(tmp_path):
    path = tmp_path / "broker.sqlite3"
    url = f"vx11sqla+sqlite:///{path}"
    with Connection(url, transport_options=OPTIONS) as conn:
        conn.SimpleQueue("jobs")  # the tables exist before four processes race to make them
    producers = [_python(PRODUCER, url, tag, "300") for tag in ("a", "b", "c")]
    consumers = [_python(CONSUMER, url) for _ in range(2)]
    for producer in producers:
        assert producer.wait(timeout=120) == 0
    delivered = []
    for consumer in consumers:
        out, _ = consumer.communicate(timeout=120)
        assert consumer.returncode == 0
        delivered += out.split()
    assert len(delivered) == 900
    assert set(delivered) == {f"{tag}-{n}" for tag in "abc" for n in range(300)}
    assert _rows(path) == 0


def test_an_unreadable_message_is_dropped_and_the_next_one_delivered(tmp_path, caplog):
    path = tmp_path / "broker.sqlite3"
    url = f"vx11sqla+sqlite:///{path}"
    with Connection(url, transport_options=OPTIONS) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"id": "first"})
        queue.put({"id": "second"})
        with sqlite3.connect(path) as db:
            db.execute("UPDATE kombu_message SET payload = '' WHERE id = (SELECT min(id) FROM kombu_message)")
        with caplog.at_level(logging.ERROR, logger="vx11_site.broker"):
            message = queue.get(timeout=5)
        assert message.payload["id"] == "second"
        message.ack()
    assert "dropped an unreadable message" in caplog.text
    assert _rows(path) == 0
