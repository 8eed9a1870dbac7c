"""Nested inputs and outputs (tuples, lists, dicts, dataclasses, Hugging Face ``ModelOutput``) as flat lists.

The order is ``torch.utils._pytree``'s, the one ``torch.export`` uses for a program's inputs and outputs,
so the flat list of a model's outputs lines up with the outputs of its Relax ``main``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch.utils._pytree as pytree


def flatten(tree: Any) -> tuple[list[Any], pytree.TreeSpec]:
    """The leaves of ``tree`` and its structure; a dataclass not yet known to pytree is registered first."""
    while True:
        leaves, spec = pytree.tree_flatten(tree)
        unknown = {type(x) for x in leaves if dataclasses.is_dataclass(x) and not isinstance(x, type)}
        if not unknown:
            return leaves, spec
        for cls in unknown:
            pytree.register_dataclass(cls)


def leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in ``torch.export``'s order, without ``None`` (no output to compare)."""
    return [x for x in flatten(tree)[0] if x is not None]


def unflatten(leaves: list[Any], spec: pytree.TreeSpec) -> Any:
    return pytree.tree_unflatten(leaves, spec)
