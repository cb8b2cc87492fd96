"""Which module owns which table of the fleet's database.

The order, first match wins:
1. the OwnershipRule rows (editable in the admin): an exact name before any prefix, a longer prefix before a
   shorter one;
2. each fleet Module's `owned_tables` (same matching), so a module registered later is placed too;
3. keywords in the table's name, as the real map script fell back to: a `cli` or `model(s)` word -> hermes,
   `shub` -> shub, `operator` -> operator (whole words of the name split at "_", so `client_x` is not cli);
4. otherwise the table is unowned, and the map lists it as such.

REAL_MAP is the map the real VX11 map script held (its explicit table -> module list, plus the canonical_*
tables the documentation gives to madre, except canonical_runs, manifestator's); the data migration stores
it, and every Module's owned_tables, as rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REAL_MAP: dict[str, tuple[str, ...]] = {
    "spawner": ("daughter_*", "spawns"),
    "switch": ("routing_events", "engines"),
    "madre": ("tasks", "intents_log", "module_status", "power_events", "canonical_*"),
    "hormiguero": ("incidents", "pheromone_log", "hormiga_state"),
    "manifestator": ("drift_reports", "canonical_runs"),
    "tentaculo_link": ("events",),
    "mcp": ("copilot_*", "sandbox_exec"),
}
KEYWORDS: dict[str, str] = {
    "cli": "hermes",
    "model": "hermes",
    "models": "hermes",
    "shub": "shub",
    "operator": "operator",
}
WORDS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Pattern:
    pattern: str
    module: str  # slug
    source: str  # "rule #<id>", "owned_tables of <slug>"

    @property
    def is_prefix(self) -> bool:
        return self.pattern.endswith("*")

    def matches(self, table: str) -> bool:
        return table.startswith(self.pattern[:-1]) if self.is_prefix else table == self.pattern


def best(patterns: list[Pattern], table: str) -> Pattern | None:
    """The exact match, else the longest matching prefix."""
    found = [p for p in patterns if p.matches(table)]
    if not found:
        return None
    return max(found, key=lambda p: (not p.is_prefix, len(p.pattern)))


def keyword_owner(table: str) -> str | None:
    for word in WORDS.split(table.lower()):
        if word in KEYWORDS:
            return KEYWORDS[word]
    return None


class Owners:
    """The owner of each table, from the rules and modules as they are when it is made."""

    def __init__(self, rules: list[Pattern], owned_tables: list[Pattern]):
        self.rules = rules
        self.owned_tables = owned_tables

    @classmethod
    def load(cls) -> Owners:
        from apps.fleet.models import Module

        from .models import OwnershipRule

        rules = [
            Pattern(rule.pattern, rule.module.slug, f"rule #{rule.id}")
            for rule in OwnershipRule.objects.select_related("module")
        ]
        owned = [
            Pattern(str(pattern), module.slug, f"owned_tables of {module.slug}")
            for module in Module.objects.all()
            for pattern in (module.owned_tables or [])
            if isinstance(pattern, str) and pattern
        ]
        return cls(rules, owned)

    def owner(self, table: str) -> tuple[str, str]:
        """(module slug, why) or ("", "") for an unowned table."""
        for patterns in (self.rules, self.owned_tables):
            match = best(patterns, table)
            if match is not None:
                return match.module, match.source
        module = keyword_owner(table)
        if module:
            return module, "keyword"
        return "", ""


def seed_rules(apps=None) -> int:
    """Store REAL_MAP and every Module's owned_tables as OwnershipRule rows (a pattern already ruled is left
    as it is: an operator's edit wins). `apps`: a migration's registry. Returns how many it created."""
    if apps is None:
        from django.apps import apps as registry

        apps = registry
    Module = apps.get_model("fleet", "Module")
    OwnershipRule = apps.get_model("audits", "OwnershipRule")
    modules = {module.slug: module for module in Module.objects.all()}
    wanted: dict[str, tuple[str, str]] = {}
    for slug, module in modules.items():
        for pattern in module.owned_tables or []:
            if isinstance(pattern, str) and pattern:
                wanted.setdefault(pattern, (slug, f"from {slug}'s owned_tables"))
    for slug, patterns in REAL_MAP.items():  # the real map wins where the two disagree
        for pattern in patterns:
            wanted[pattern] = (slug, "the real VX11 DB map")
    taken = set(OwnershipRule.objects.values_list("pattern", flat=True))
    created = 0
    for pattern, (slug, note) in sorted(wanted.items()):
        if pattern in taken or slug not in modules:
            continue
        OwnershipRule.objects.create(module=modules[slug], pattern=pattern, note=note)
        created += 1
    return created
