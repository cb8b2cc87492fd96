"""Flows API."""

from ninja import Router

router = Router(tags=["flows"])
