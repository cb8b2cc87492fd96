"""Daughters API."""

from ninja import Router

router = Router(tags=["daughters"])
