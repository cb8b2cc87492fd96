"""Power API."""

from ninja import Router

router = Router(tags=["power"])
