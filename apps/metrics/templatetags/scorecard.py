from django import template

from apps.metrics.board import VERDICT_COLOURS
from apps.metrics.models import Scorecard
from vx11_site.display import NEUTRAL

register = template.Library()


@register.inclusion_tag("admin/metrics/scorecard/index_link.html")
def scorecard_link():
    """The admin index's first line: the latest verdict and the way to the scorecard page."""
    latest = Scorecard.objects.only("pk", "verdict", "generated_at").first()
    colour = VERDICT_COLOURS.get(latest.verdict, NEUTRAL) if latest is not None else NEUTRAL
    return {"latest": latest, "colour": colour}
