"""The embedded Celery broker: kombu's SQLAlchemy transport on an SQLite file in var/.

Why this one: every publish is one INSERT and every delivery one DELETE, each committed in its own
transaction (the fetch runs under BEGIN IMMEDIATE), so a consumer sees a whole message or none.
kombu's filesystem transport is not safe this way: it creates a message file before writing its content,
a consumer that lists the folder in between reads an empty file and the worker dies on `JSONDecodeError`
(kombu issue #1551). SQLite is part of Python, so the embedded portal still needs nothing else.

The one change to kombu's transport: a delivered message is deleted, not kept with `visible = False`,
so a demo that runs for days keeps a broker file the size of its backlog. Acknowledgement is unchanged
(kombu's virtual transport keeps unacknowledged messages in memory and puts them back on a clean close).
"""

import logging
from queue import Empty

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.json import loads
from sqlalchemy import text

log = logging.getLogger(__name__)

SCHEME = "vx11sqla"


class Channel(kombu_sqla.Channel):
    def _get(self, queue):
        queue_row = self._get_or_create(queue)
        message = self.message_cls
        if self.session.bind.name == "sqlite":
            self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            row = (
                self.session.query(message)
                .with_for_update()
                .filter(message.queue_id == queue_row.id, message.visible.is_(True))
                .order_by(message.sent_at, message.id)
                .first()
            )
            if row is None:
                raise Empty()
            payload = row.payload
            self.session.delete(row)
        finally:
            self.session.commit()
        try:
            return loads(payload)
        except ValueError:
            # Stored whole by one INSERT, so this is not a torn write; one bad message must not stop the worker.
            log.error("broker: dropped an unreadable message from queue %s: %r", queue, payload[:200])
            raise Empty() from None


class Transport(kombu_sqla.Transport):
    Channel = Channel
