"""NSGA-II's two orderings: non-dominated fronts and crowding distance (all objectives minimized)."""

from __future__ import annotations

import math
from collections.abc import Sequence

Objectives = tuple[float, ...]


def dominates(a: Objectives, b: Objectives) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def fronts(points: Sequence[Objectives]) -> list[list[int]]:
    """Indices of ``points`` split into non-dominated fronts, best front first."""
    dominated_by: list[list[int]] = [[] for _ in points]
    count = [0] * len(points)
    for i, a in enumerate(points):
        for j, b in enumerate(points):
            if dominates(a, b):
                dominated_by[i].append(j)
            elif dominates(b, a):
                count[i] += 1
    out, current = [], [i for i, n in enumerate(count) if n == 0]
    while current:
        out.append(current)
        following = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = sorted(following)
    return out


def crowding(points: Sequence[Objectives], front: list[int]) -> dict[int, float]:
    """Crowding distance of each member of ``front`` (boundary points get infinity)."""
    distance = {i: 0.0 for i in front}
    for m in range(len(points[front[0]]) if front else 0):
        ordered = sorted(front, key=lambda i: (points[i][m], i))
        low, high = points[ordered[0]][m], points[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high - low <= 0:
            continue
        for prev, cur, nxt in zip(ordered, ordered[1:], ordered[2:], strict=False):
            distance[cur] += (points[nxt][m] - points[prev][m]) / (high - low)
    return distance


def rank(points: Sequence[Objectives]) -> list[tuple[int, float]]:
    """Per point, (front number, -crowding distance): smaller is better (NSGA-II's crowded order)."""
    out: list[tuple[int, float]] = [(0, 0.0)] * len(points)
    for level, front in enumerate(fronts(points)):
        for i, d in crowding(points, front).items():
            out[i] = (level, -d)
    return out
