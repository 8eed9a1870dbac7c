"""egglog-python's private APIs that tsir uses, for want of public ones (tested with ``TESTED_WITH``).

- ``EGraph._serialize``: the only way to read every e-class with its e-nodes (``freeze`` gives declarations,
  ``display`` renders them);
- ``Ruleset.__egg_ruleset__``: the only way to list the rules a ruleset holds (with their names).
"""

from __future__ import annotations

import json

import egglog

TESTED_WITH = "13.2.0"


def serialized(egraph: egglog.EGraph) -> dict:
    """The e-graph as egglog's serialized JSON (``nodes``, ``class_data``), primitives inside their classes."""
    return json.loads(egraph._serialize(split_primitive_outputs=False).to_json())


def declared_rules(ruleset: egglog.Ruleset) -> list:
    """The rule declarations of ``ruleset`` in declaration order (each has a ``name``)."""
    return list(ruleset.__egg_ruleset__.rules)

