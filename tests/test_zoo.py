"""Every zoo model round-trips (import -> tsir -> lower, no rewrites) and optimizes in exact mode."""

from __future__ import annotations

import pytest

from tsir import optimize, zoo
from tsir.backends import runtime, targets
from tsir.convert import relax_to_tsir
from tsir.draws import fresh_inputs, index_rows, integer_ranges
from tsir.frontend import export, to_relax
from tsir.lower import lower
from tsir.verify import verify

MODELS = zoo.names()


def test_zoo_has_the_required_architectures():
    assert {"mlp", "lenet", "resnet18", "mobilenet_v2", "squeezenet", "inception_block", "resnext_block",
            "bert_layer", "nasrnn", "hf_bert"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_round_trip(name):
    entry = zoo.load(name)
    mod = to_relax(export(entry.module, entry.example_inputs))
    graph = relax_to_tsir(mod)
    assert {t.op for t in graph.nodes()} - {"input", "weight", "tuple", "opaque", "get_item"}, \
        "tsir should model some ops of every zoo model"
    runner = runtime.Runner(runtime.build(lower(graph, graph.root, mod), targets.resolve("x86")))
    ranges = integer_ranges(entry.example_inputs, index_rows(mod))
    verify(entry.module, runner, fresh_inputs(entry.example_inputs, 7, ranges))  # raises VerificationError


@pytest.mark.parametrize("name", MODELS)
def test_optimize_exact(name):
    entry = zoo.load(name)
    result = optimize(entry.module, entry.example_inputs, budget_s=20, measure=False)
    verification = result.report["verification"]
    assert verification["status"] == "verified" and len(verification["inputs"]["seeds"]) == 3
    result.verify(fresh_inputs(entry.example_inputs, seed=11))  # raises VerificationError
    fired = [rule for rules in result.report["rules_fired"].values() for rule in rules]
    assert fired, f"no rule fired on {name}"
