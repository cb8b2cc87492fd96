"""Database helpers shared by every app that keeps a bounded table or a long-running row."""

import contextlib
import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connection, transaction

log = logging.getLogger(__name__)


def prune_in_chunks(queryset, chunk: int | None = None, before_delete=None) -> int:
    """Delete in chunks of primary keys so a prune never holds the database for long.
    `before_delete(ids)`: what must go with each chunk outside the database (files), done first."""
    chunk = chunk or settings.VX11_PRUNE_CHUNK
    total = 0
    while True:
        ids = list(queryset.values_list("id", flat=True)[:chunk])
        if not ids:
            return total
        if before_delete is not None:
            before_delete(ids)
        with transaction.atomic():
            total += queryset.model.objects.filter(id__in=ids).delete()[0]


def bulk_set(objs: list, fields: list[str]) -> None:
    """Write `fields` of many rows with one executemany of `UPDATE ... WHERE id = %s`.

    Django's bulk_update builds a CASE WHEN per row and field in Python: measured 320-550 ms
    for 3 fields of 1,010 modules, against 3 ms for this (bench/probe_round.py notes).
    """
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    with transaction.atomic(), connection.cursor() as cursor:
        qn = connection.ops.quote_name
        assignments = ", ".join(f"{qn(f.column)} = %s" for f in columns)
        sql = f"UPDATE {qn(meta.db_table)} SET {assignments} WHERE {qn(meta.pk.column)} = %s"
        cursor.executemany(
            sql, [[f.get_db_prep_save(getattr(obj, f.attname), connection) for f in columns] + [obj.pk] for obj in objs]
        )


@contextlib.contextmanager
def heartbeat_thread(beat: Callable[[], bool], every: float, what: str):
    """While the block runs, a thread calls `beat()` (which stores "alive now" on a row) every `every` seconds, so a
    sweep tells a row whose process is gone from a long one; `beat()` returning False (the row ended or was swept)
    stops it. Inside an outer transaction nobody else sees the row, so nobody could sweep it: no thread then."""
    if transaction.get_connection().in_atomic_block:
        yield
        return
    stop = threading.Event()

    def loop():
        try:
            while not stop.wait(every):
                try:
                    if not beat():
                        return  # ended or swept: nothing left to keep alive
                except DatabaseError as exc:  # a missed beat; the next one may pass
                    log.warning("%s: heartbeat not stored: %s", what, exc)
        finally:
            connection.close()  # this thread's own connection

    threading.Thread(target=loop, name=f"{what} heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()  # not joined: a beat waiting for a lock ends on its own
