"""Genetic search over e-graph choices.

A genome is one e-node index per e-class. The first population holds the input program, the greedy
extraction and random genomes; each generation keeps the elite, picks parents by tournament, mixes
them by uniform or subtree crossover, mutates, and repairs every child into an acyclic program.
Fitness is a cost function of the decoded program (lower is better). Deterministic for a seed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tsir.search.extract import Genome, Space, walk
from tsir.search.greedy import greedy


@dataclass(frozen=True)
class GeneticConfig:
    population: int = 24
    generations: int = 30
    elite: int = 2
    tournament: int = 3
    mutation_rate: float = 0.05  # chance that a reachable class re-picks its e-node
    time_s: float = 30.0
    seed: int = 0


@dataclass
class SearchResult:
    genome: Genome
    cost: float
    seeds: dict[str, float]  # cost of each seeded extraction: "original", "greedy"
    history: list[float] = field(default_factory=list)  # best cost after each generation
    evaluations: int = 0
    time_s: float = 0.0


def genetic_search(
    space: Space, config: GeneticConfig = GeneticConfig(), cost: Callable[[Genome], float] | None = None,
) -> SearchResult:
    """Search for the cheapest program in ``space`` (by ``cost``, default the analytic model)."""
    cost = cost or space.cost
    rng = random.Random(config.seed)
    start = time.perf_counter()
    cache: dict[tuple[int, ...], float] = {}

    def fitness(genome: Genome) -> float:
        walk(space, genome)
        key = tuple(genome)
        if key not in cache:
            cache[key] = cost(genome)
        return cache[key]

    seeds = {"original": space.original(), "greedy": greedy(space)}
    population = list(seeds.values())
    while len(population) < config.population:
        population.append(_random_genome(space, rng))
    def ranked(genomes: list[Genome]) -> list[tuple[float, int, Genome]]:
        return sorted(((fitness(g), i, g) for i, g in enumerate(genomes)), key=lambda s: s[:2])

    scored = ranked(population)
    result = SearchResult(scored[0][2], scored[0][0], {k: fitness(g) for k, g in seeds.items()})
    for _ in range(config.generations):
        if time.perf_counter() - start >= config.time_s:
            break
        children = [g for _, _, g in scored[: config.elite]]
        while len(children) < config.population:
            a, b = _tournament(scored, rng, config.tournament), _tournament(scored, rng, config.tournament)
            child = _uniform(a, b, space, rng) if rng.random() < 0.5 else _subtree(a, b, space, rng)
            _mutate(child, space, rng, config.mutation_rate)
            children.append(child)
        scored = ranked(children)
        result.history.append(scored[0][0])
    result.genome, result.cost = scored[0][2], scored[0][0]
    result.evaluations = len(cache)
    result.time_s = time.perf_counter() - start
    return result


def _random_genome(space: Space, rng: random.Random) -> Genome:
    return [rng.randrange(len(nodes)) for nodes in space.view.classes]


def _tournament(scored: list, rng: random.Random, k: int) -> Genome:
    return min(rng.sample(scored, min(k, len(scored))), key=lambda s: s[:2])[2]


def _uniform(a: Genome, b: Genome, space: Space, rng: random.Random) -> Genome:
    child = list(a)
    for c in walk(space, list(b)):
        if rng.random() < 0.5:
            child[c] = b[c]
    return child


def _subtree(a: Genome, b: Genome, space: Space, rng: random.Random) -> Genome:
    """``a`` with the choices of ``b`` for every class under one class that ``b`` reaches."""
    child = list(a)
    reached = walk(space, list(b))
    top = rng.choice(reached)
    stack, seen = [top], set()
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        child[c] = b[c]
        stack.extend(space.node(b, c).children)
    return child


def _mutate(genome: Genome, space: Space, rng: random.Random, rate: float) -> None:
    for c in walk(space, genome):
        if len(space.view.classes[c]) > 1 and rng.random() < rate:
            genome[c] = rng.randrange(len(space.view.classes[c]))
