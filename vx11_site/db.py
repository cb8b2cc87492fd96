"""Database helpers shared by every app that keeps a bounded table."""

from django.conf import settings
from django.db import transaction


def prune_in_chunks(queryset, chunk: int | None = None) -> int:
    """Delete in chunks of primary keys so a prune never holds the database for long."""
    chunk = chunk or settings.VX11_PRUNE_CHUNK
    total = 0
    while True:
        ids = list(queryset.values_list("id", flat=True)[:chunk])
        if not ids:
            return total
        with transaction.atomic():
            total += queryset.model.objects.filter(id__in=ids).delete()[0]
