"""The Python API: ``tsir.optimize`` runs the pipeline as a flat sequence of named stages (``tsir.stages``).

import -> tsir -> saturate -> search -> approx or lower -> build -> verify -> measure. Each stage records
what it did in the report; a result that fails verification is never returned.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from tsir import report as report_files
from tsir import stages
from tsir.backends import execute, runtime, targets
from tsir.convert import relax_to_tsir
from tsir.egraph import Limits, TermEGraph
from tsir.errors import TsirError
from tsir.options import Options
from tsir.search.driver import run_search
from tsir.search.extract import Space
from tsir.source import Model, load
from tsir.verify import Tolerance, Verification, verify


@dataclass
class Result:
    """An optimized, verified model."""

    module: tvm.IRModule  # the optimized Relax module
    executable: relax.VMExecutable
    report: dict
    model: Callable  # the original, in its own framework (torch module, ONNX Runtime, TVM): the reference
    example_inputs: tuple[torch.Tensor, ...]
    spec: targets.TargetSpec | None = None  # what it was built for; None means the host CPU

    def run(self, inputs: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
        """Run the optimized model on tensors or arrays (on its target, see ``backends.execute``)."""
        with tempfile.TemporaryDirectory(prefix="tsir-run-") as tmp:
            return self._on_device(Path(tmp))([np.asarray(x) for x in inputs])

    def verify(self, inputs: Sequence[torch.Tensor], tolerance: Tolerance | None = None) -> Verification:
        """Check the optimized model against the original on ``inputs`` (``tolerance`` None: by dtype, see
        ``tsir.verify``); raises VerificationError."""
        with tempfile.TemporaryDirectory(prefix="tsir-verify-") as tmp:
            return verify(self.model, self._on_device(Path(tmp)), inputs, tolerance)

    def _on_device(self, workdir: Path) -> execute.Run:
        return execute.on_device(self.module, self.executable, self.spec or targets.resolve("x86"), workdir)[0]

    def export(self, path: str | os.PathLike) -> Path:
        """Write the compiled library (``.so``) atomically: a failed write leaves nothing behind."""
        path = Path(path)
        stages.writable_dir(path.parent)
        return runtime.export(self.executable, path, self.spec or targets.resolve("x86"))

    def save_report(self, path: str | os.PathLike) -> Path:
        """Write ``report.json`` at ``path``, with ``report.md`` and its plots beside it (atomically)."""
        path = Path(path)
        stages.writable_dir(path.parent)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(self.report, f, indent=2)
        os.replace(f.name, path)
        report_files.write_markdown(self.report, path.parent)
        return path


def optimize(model: Model, example_inputs: Sequence[torch.Tensor | np.ndarray] | None = None,
             options: Options | None = None, **keywords) -> Result:
    """Optimize ``model`` for a target; returns a verified ``Result`` (see the module docstring).

    ``model`` is a ``torch.nn.Module`` (exported here with static shapes) or an ``ExportedProgram``
    (both need ``example_inputs``), a path to an ``.onnx`` file, or a Relax ``tvm.IRModule`` (for
    these two, ``example_inputs`` default to random inputs of the declared shapes). How to optimize is
    ``options`` (a ``tsir.Options``) and/or its fields as keywords, e.g. ``target="arm"``, ``budget_s=30``:
    ``cost="measured"`` times kernels on the target, ``rpc="host:port:key"`` whole candidates on TVM RPC
    devices, ``mode="approx"`` chooses low-rank / int8 approximations within ``accuracy`` (a ``tsir.Budget``,
    checked on its held-out data, ``report["approx"]``); ``on_stage(name, None)`` is called when a stage
    starts and ``on_stage(name, seconds)`` when it ends.
    The result is verified against the original on ``verify_draws`` random input draws (seeds ``seed + 1``
    on), or on ``verify_data`` when given: a ``.npz`` path or arrays, one per model input, shaped like its
    example input or stacked along a new leading axis. ``report["verification"]["status"]`` says what held:
    ``verified``, ``verified-on-host`` or ``within-budget`` (approx); anything else raises.
    """
    options = Options.of(options, keywords)
    plan = stages.plan(options)
    stage = stages.Stages(options.log, options.on_stage, options.out_dir and Path(options.out_dir))
    try:
        return _optimize(model, example_inputs, options, plan, stage)
    except TsirError:
        stage.discard_log()  # bad input: nothing written
        raise


def _optimize(model: Model, example_inputs: Sequence | None, options: Options, plan: stages.Plan,
              stage: stages.Stages) -> Result:
    """``optimize``'s stages, in order."""
    source = stage("import", load, model, example_inputs, options.custom_convert_map)
    model_name = options.model_name or stages.default_name(model, source)
    draws = stages.verification_inputs(options, source)  # checked now: a NaN original fails before the search
    graph = stage("tsir", relax_to_tsir, source.module)
    egraph = TermEGraph(graph, plan.families)
    saturation = stage("saturate", egraph.saturate, Limits(time_s=max(0.3 * options.budget_s, 0.1)))
    space = Space.of(egraph.view(), plan.spec.roofline)
    config = stages.search_config(options, stage.total_s)
    arrays = [np.asarray(t) for t in source.example_inputs]
    search = stage("search", run_search, egraph, space, graph, source.module, plan.spec, config, plan.search, arrays,
                   plan.measurer)
    if options.mode == "approx":
        chosen = stage("approx", stages.approximate, space, graph, source, plan, config, options, search)
    else:
        chosen = stage("lower", stages.lower_exact, space, graph, search, source.module)
    executable = stage("build", stages.build, chosen, search, plan, options.tuning_trials,
                       reproduce=(chosen.module, partial(runtime.build, spec=plan.spec)))
    if plan.spec.nvcc_check:
        stage("nvcc", runtime.nvcc_compile, executable, plan.spec)
    with tempfile.TemporaryDirectory(prefix="tsir-") as workdir:
        checked = stages.verify_stage(stage, source, chosen, executable, plan.spec, draws, Path(workdir))
        report = stages.make_report(options, plan, model_name, source, graph, saturation, space, search, chosen,
                                    draws, checked, stage)
        if options.measure:
            latency, report["target"]["measured_on"] = stages.measure(stage, options, plan, source, executable,
                                                                      checked, Path(workdir))
            if latency is not None:
                report["latency_ms"] = latency
    result = Result(chosen.module, executable, report, source.reference, source.example_inputs, plan.spec)
    if options.out_dir is not None:
        result.export(Path(options.out_dir) / "model.so")
        result.save_report(Path(options.out_dir) / "report.json")
    return result
