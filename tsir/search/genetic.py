"""Multi-objective genetic search over e-graph choices (NSGA-II).

A genome is one e-node index per e-class. The first population holds the seeded extractions (the
input program, greedy, egglog's, the ILP's) and random genomes. Each generation picks parents by binary
tournament in NSGA-II's crowded order, mixes them by uniform, subtree or region crossover (a region is
one of the kernels TVM fuses the parent's program into: a conv with its epilogue, a chain of
elementwise and layout ops), mutates single classes and, now and then, a whole region of the child,
repairs every child into an acyclic program, and keeps the best of parents and children by front and
crowding distance. Objectives are (latency, size, error), all minimized; the winner is the fastest
genome whose error is within ``max_error`` (0 in exact mode). Deterministic for a seed; stops at
``generations``, at the wall-clock ``time_s``, or after ``patience`` generations without a faster
winner. With ``polish_share`` (the analytic tier, whose latency objective is cheap) a hill climb over
single-class moves then improves the winner in the time left, at least that share of ``time_s``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tsir.search.extract import Genome, Space, walk
from tsir.search.greedy import greedy
from tsir.search.nsga import Objectives, rank

# called after each generation with (generation, best latency, population with objectives); returning
# True says the objectives changed (new measurements), so cached values are recomputed
Feedback = Callable[[int, float, list[tuple[Genome, Objectives]]], bool]
# called with the repaired genomes of a population or a generation's children that have no objectives
# yet, before any is scored, so that a costly objective can cost them together (e.g. on several devices)
Batch = Callable[[list[Genome]], None]


@dataclass(frozen=True)
class GeneticConfig:
    population: int = 24
    generations: int = 30
    tournament: int = 2
    mutation_rate: float = 0.05  # chance that a reachable class re-picks its e-node
    region_mutation_rate: float = 0.2  # chance that a child re-picks the e-nodes of one of its kernels at once
    time_s: float = 30.0
    seed: int = 0
    patience: int = 10  # generations without a faster winner before stopping early
    max_error: float = 0.0  # error budget: 0 is exact mode
    knobs: tuple[int, ...] = ()  # approximate mode: choices per approximation knob, genes after the classes
    polish_share: float = 0.0  # of ``time_s``, kept for a hill climb from the winner (for a cheap latency objective)


@dataclass
class SearchResult:
    genome: Genome
    cost: float  # latency objective of the winner
    seeds: dict[str, float]  # latency objective of each seeded extraction
    history: list[float] = field(default_factory=list)  # best latency after each generation
    front: list[tuple[Genome, Objectives]] = field(default_factory=list)  # the final Pareto front
    ranked: list[tuple[Genome, Objectives]] = field(default_factory=list)  # final population, best first
    evaluations: int = 0
    explored: list[tuple[int, ...]] = field(default_factory=list)  # every distinct genome scored, in order
    time_s: float = 0.0
    stopped_by: str = "generations"  # or "time" (the budget ``time_s`` ran out) or "patience"
    polished: int = 0  # single-class moves of the final hill climb that made the winner faster
    before_polish: float = 0.0  # latency objective of the GA's winner before the hill climb


def analytic_objectives(space: Space) -> Callable[[Genome], Objectives]:
    return lambda genome: (space.cost(genome), float(space.size_bytes(genome)), 0.0)


def genetic_search(
    space: Space, config: GeneticConfig = GeneticConfig(), objectives: Callable[[Genome], Objectives] | None = None,
    seeds: dict[str, Genome] | None = None, feedback: Feedback | None = None,
    clock: Callable[[], float] = time.perf_counter, batch: Batch | None = None,
) -> SearchResult:
    """Search ``space`` for the Pareto front of ``objectives`` (default: the analytic model).

    ``clock`` measures the budget ``config.time_s``; the measured tier passes one that leaves out the
    time spent timing kernels, which is bounded by a count instead, so a warm cache replays a run.
    """
    objectives = objectives or analytic_objectives(space)
    rng = random.Random(config.seed)
    start, wall_start = clock(), time.perf_counter()
    cache: dict[tuple[int, ...], Objectives] = {}
    evaluated: dict[tuple[int, ...], None] = {}  # ordered: the first scoring of each genome

    def score(genome: Genome) -> Objectives:
        walk(space, genome)
        key = tuple(genome)
        if key not in cache:
            cache[key] = objectives(genome)
            evaluated[key] = None
        return cache[key]

    def score_all(genomes: list[Genome]) -> list[tuple[Genome, Objectives]]:
        if batch is not None:
            for genome in genomes:
                walk(space, genome)
            fresh = {tuple(g): g for g in genomes if tuple(g) not in cache}
            if fresh:
                batch(list(fresh.values()))
        return [(g, score(g)) for g in genomes]

    def best(pop: list[tuple[Genome, Objectives]]) -> tuple[Genome, Objectives]:
        feasible = [p for p in pop if p[1][2] <= config.max_error] or pop
        return min(feasible, key=lambda p: (p[1][0], p[1][1], p[1][2]))

    seeds = {"original": space.original(), "greedy": greedy(space), **(seeds or {})}
    width = len(space.view.classes) + len(config.knobs)  # seeds without knob genes keep every layer exact
    seeds = {k: list(g) + [0] * (width - len(g)) for k, g in seeds.items()}
    genomes = [list(g) for g in seeds.values()]
    while len(genomes) < config.population:
        genomes.append([rng.randrange(len(nodes)) for nodes in space.view.classes]
                       + [rng.randrange(k) for k in config.knobs])
    population = _select(score_all(genomes), config.population)
    result = SearchResult(best(population)[0], best(population)[1][0], {k: score(list(g))[0] for k, g in seeds.items()})
    stale = 0
    ga_time_s = config.time_s * (1 - config.polish_share)
    for generation in range(config.generations):
        elapsed = clock() - start
        if elapsed >= ga_time_s or stale >= config.patience:
            result.stopped_by = "time" if elapsed >= ga_time_s else "patience"
            break
        order = rank([o for _, o in population])
        children = []
        while len(children) < config.population:
            a, b = (_tournament(population, order, rng, config.tournament) for _ in range(2))
            child = rng.choice((_uniform, _subtree, _region))(a, b, space, rng)
            _mutate(child, space, rng, config.mutation_rate)
            if rng.random() < config.region_mutation_rate:
                _mutate_region(child, space, rng)
            _mix_knobs(child, b, config, rng)
            children.append(child)
        population = _select(_distinct(population + score_all(children)), config.population)
        winner = best(population)
        stale = stale + 1 if result.history and winner[1][0] >= result.history[-1] else 0
        result.history.append(winner[1][0])
        if feedback is not None and feedback(generation, winner[1][0], population):
            cache.clear()
            population = _select([(g, score(g)) for g, _ in population], config.population)
            result.history[-1] = best(population)[1][0]
    result.genome, winner_objectives = best(population)
    if config.polish_share > 0:
        result.before_polish = winner_objectives[0]
        climbed, climbed_objectives, result.polished = _polish(
            space, result.genome, score, lambda: clock() - start < config.time_s, config.max_error)
        if result.polished:
            population = _select(_distinct([(climbed, climbed_objectives), *population]), config.population)
            result.genome, winner_objectives = climbed, climbed_objectives
    result.cost = winner_objectives[0]
    order = rank([o for _, o in population])
    result.front = [population[i] for i in range(len(population)) if order[i][0] == 0]
    result.ranked = [population[i] for i in sorted(range(len(population)), key=lambda i: (population[i][1], i))]
    result.evaluations = len(evaluated)
    result.explored = list(evaluated)
    result.time_s = time.perf_counter() - wall_start
    return result


def _distinct(pop: list[tuple[Genome, Objectives]]) -> list[tuple[Genome, Objectives]]:
    seen: set[tuple[int, ...]] = set()
    out = []
    for genome, objectives in pop:
        if tuple(genome) not in seen:
            seen.add(tuple(genome))
            out.append((genome, objectives))
    return out


def _select(pop: list[tuple[Genome, Objectives]], size: int) -> list[tuple[Genome, Objectives]]:
    order = rank([o for _, o in pop])
    keep = sorted(range(len(pop)), key=lambda i: (order[i], i))[:size]
    return [pop[i] for i in keep]


def _tournament(pop: list, order: list[tuple[int, float]], rng: random.Random, k: int) -> Genome:
    picks = rng.sample(range(len(pop)), min(k, len(pop)))
    return pop[min(picks, key=lambda i: (order[i], i))][0]


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


def _region(a: Genome, b: Genome, space: Space, rng: random.Random) -> Genome:
    """``a`` with the choices of ``b`` for every class of one of ``b``'s kernels (a fusion group)."""
    child = list(a)
    groups = space.kernel_groups(list(b))
    for c in rng.choice(groups) if groups else ():  # a program that runs no kernel has no region
        child[c] = b[c]
    return child


def _mutate_region(genome: Genome, space: Space, rng: random.Random) -> None:
    """Re-pick the e-node of every class of one of the program's kernels."""
    groups = space.kernel_groups(genome)
    for c in rng.choice(groups) if groups else ():
        genome[c] = rng.randrange(len(space.view.classes[c]))


def _polish(space: Space, genome: Genome, score: Callable[[Genome], Objectives], in_time: Callable[[], bool],
            max_error: float) -> tuple[Genome, Objectives, int]:
    """Hill climb from ``genome``: re-pick one class's e-node at a time, keep each move that makes the program
    faster within ``max_error``, sweep the program's classes until a sweep finds none or time is up. Returns
    the last program, its objectives and how many moves were kept."""
    current = list(genome)
    objectives, moves = score(list(current)), 0
    improved = True
    while improved:
        improved = False
        for c in walk(space, list(current)):
            for i in range(len(space.view.classes[c])):
                if i == current[c]:
                    continue
                if not in_time():
                    return current, objectives, moves
                move = list(current)
                move[c] = i
                moved = score(move)  # repairs ``move``
                if moved[0] < objectives[0] and moved[2] <= max_error:
                    current, objectives, moves, improved = move, moved, moves + 1, True
    return current, objectives, moves


def _mix_knobs(child: Genome, other: Genome, config: GeneticConfig, rng: random.Random) -> None:
    """Approximate mode: knob genes cross over uniformly and mutate like class genes."""
    n = len(child) - len(config.knobs)
    for i, k in enumerate(config.knobs):
        if rng.random() < 0.5:
            child[n + i] = other[n + i]
        if rng.random() < config.mutation_rate * 4:
            child[n + i] = rng.randrange(k)


def _mutate(genome: Genome, space: Space, rng: random.Random, rate: float) -> None:
    for c in walk(space, genome):
        if len(space.view.classes[c]) > 1 and rng.random() < rate:
            genome[c] = rng.randrange(len(space.view.classes[c]))
