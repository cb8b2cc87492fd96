from django import template

from apps.fleet.models import Module

register = template.Library()


@register.inclusion_tag("admin/fleet/summary.html")
def fleet_summary():
    return {"s": Module.fleet_summary()}
