"""Rule families, one module each. ``FAMILIES`` maps a family name to its egglog ruleset."""

from egglog import Ruleset

from tsir.rewrites import algebra, folding, fusion, library, multi

FAMILIES: dict[str, Ruleset] = {
    "algebra": algebra.rules,
    "fusion": fusion.rules,
    "folding": folding.rules,
    "multi": multi.rules,
    "library": library.rules,  # oneDNN kernels; needs the native extension (make native)
}
# Families that only grow the graph in width; they run a bounded number of passes, not to saturation.
MULTI_PATTERN = ("multi",)


def rule_names(family: str) -> list[str]:
    """The names of the rules in one family, in declaration order."""
    return [r.name for r in FAMILIES[family].__egg_ruleset__.rules]
