"""A worker that loses its broker for a moment reconnects and goes on: a Redis restarted under it, and the
embedded SQLite broker file locked by another process."""

import os
import re
import signal
import sqlite3
import time

import pytest

from tests.helpers import WorkerProcess, celery_sends_to, database_url_of_test_db, free_port, redis_server, redis_url


def _worker_env(broker_url: str, queue: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(
        DJANGO_SETTINGS_MODULE="vx11_site.settings", VX11_CELERY_QUEUE=queue, DATABASE_URL=database_url_of_test_db()
    )
    if broker_url.startswith("redis"):
        env["REDIS_URL"] = broker_url
    return env


def _ran(worker: WorkerProcess, count: int, timeout: float = 60) -> None:
    """Wait until the worker's log shows `count` finished celery.accumulate tasks."""
    deadline = time.monotonic() + timeout
    while len(re.findall(r"celery\.accumulate\[[^\]]+\] succeeded", worker.log.read_text())) < count:
        assert worker.proc.poll() is None, f"the worker died:\n{worker.output()}"
        assert time.monotonic() < deadline, f"task {count} never ran:\n{worker.output()}"
        time.sleep(0.2)


@pytest.mark.services
def test_the_worker_reconnects_after_redis_restarts(tmp_path, transactional_db):
    redis_url()  # skips without Redis tools locally, as every services test
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    server = redis_server(port)
    worker = None
    try:
        worker = WorkerProcess(_worker_env(broker, "outage"), "outage", tmp_path / "worker.log").start(concurrency=1)
        with celery_sends_to(broker, "outage"):
            from vx11_site.celery import app

            app.send_task("celery.accumulate", args=(1,), queue="outage")
            _ran(worker, 1)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
            deadline = time.monotonic() + 30
            while "Connection to broker lost" not in worker.log.read_text():
                assert time.monotonic() < deadline, f"the worker never noticed the outage:\n{worker.output()}"
                time.sleep(0.2)
            server = redis_server(port)
            # a Redis restarted empty has lost the queue's binding; the worker declares it again when it reconnects
            deadline = time.monotonic() + 60
            while worker.log.read_text().count("Connected to redis") < 2:
                assert worker.proc.poll() is None, f"the worker died:\n{worker.output()}"
                assert time.monotonic() < deadline, f"the worker did not reconnect:\n{worker.output()}"
                time.sleep(0.2)
            app.send_task("celery.accumulate", args=(2,), queue="outage")
            _ran(worker, 2)
        assert worker.proc.poll() is None
    finally:
        if worker is not None:
            worker.kill(signal.SIGTERM)
        os.killpg(server.pid, signal.SIGKILL)


def test_the_worker_survives_a_locked_sqlite_broker(tmp_path, transactional_db):
    path = tmp_path / "celery-broker.sqlite3"  # where the embedded settings put the broker, in VX11_VAR_DIR
    broker = f"vx11sqla+sqlite:///{path}"
    env = _worker_env(broker, "locked")
    env["VX11_VAR_DIR"] = str(tmp_path)
    worker = WorkerProcess(env, "locked", tmp_path / "worker.log").start(concurrency=1)
    try:
        with celery_sends_to(broker, "locked"):
            from vx11_site.celery import app

            app.send_task("celery.accumulate", args=(1,), queue="locked")
            _ran(worker, 1)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            time.sleep(2)  # the worker polls every second: it meets the lock at least once
            holder.execute("COMMIT")
            holder.close()
            app.send_task("celery.accumulate", args=(2,), queue="locked")
            _ran(worker, 2)
        assert worker.proc.poll() is None
    finally:
        worker.kill(signal.SIGTERM)
