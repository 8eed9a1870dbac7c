"""Rule families, one module each. ``FAMILIES`` maps a family name to its egglog ruleset.

Each family module declares ``rules`` (an egglog ruleset) and ``TOLERANCE`` (rule name -> the fp32
disagreement its property test accepts, see ``rewrites._common``).
"""

from egglog import Ruleset

from tsir._compat.egglog import declared_rules
from tsir.rewrites import algebra, conv, folding, fusion, layout, library, multi

_MODULES = {"algebra": algebra, "fusion": fusion, "folding": folding, "multi": multi, "conv": conv,
            "layout": layout, "library": library}  # library: oneDNN kernels; needs the native extension (make native)
FAMILIES: dict[str, Ruleset] = {name: module.rules for name, module in _MODULES.items()}
# Families that only grow the graph in width: they run a bounded number of passes, not to saturation.
MULTI_PATTERN = ("multi",)
# What such a family keeps running after its bounded passes (its rules that do not widen the graph).
AFTER_PASSES: dict[str, Ruleset] = {"multi": multi.cancel}


def rule_names(family: str) -> list[str]:
    """The names of the rules in one family, in declaration order."""
    return [r.name for r in declared_rules(FAMILIES[family])]


def tolerance(rule: str) -> float:
    """The fp32 relative tolerance of a rule's property test (see ``rewrites._common``)."""
    for module in _MODULES.values():
        if rule in module.TOLERANCE:
            return module.TOLERANCE[rule]
    raise KeyError(f"no rule named {rule!r}; see rewrites.rule_names(family)")


def rule(name: str):
    """The egglog rule declared under ``name`` (to run it alone, e.g. in its property test)."""
    for family in FAMILIES:
        for declared, decl in zip(_MODULES[family].RULES, declared_rules(FAMILIES[family]), strict=True):
            if decl.name == name:
                return declared
    raise KeyError(f"no rule named {name!r}; see rewrites.rule_names(family)")


def summary() -> dict[str, int]:
    """Rule count per family."""
    return {family: len(rule_names(family)) for family in FAMILIES}
