"""What the user hands in, made uniform: a Relax module, example inputs, and the reference to check against.

A ``torch.nn.Module`` (or ``ExportedProgram``), an ONNX file, or a Relax ``IRModule`` each become a
``Source``. Its ``reference`` runs the model in the framework it came from (PyTorch, ONNX Runtime, or
TVM building the input Relax module as given): the optimized program is verified against that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from tsir import pytree
from tsir.backends.runtime import flatten
from tsir.errors import StaticShapeError, TsirError, UnsupportedOpError
from tsir.frontend import check_static, export, to_relax
from tsir.onnx_clip import clips_from_call_tir
from tsir.onnx_pads import zero_pads_as_identity

Model = torch.nn.Module | torch.export.ExportedProgram | tvm.IRModule | str | os.PathLike


@dataclass
class Source:
    """A model ready for the pipeline."""

    kind: str  # "torch", "onnx" or "relax"
    module: tvm.IRModule  # Relax, static shapes
    example_inputs: tuple[torch.Tensor, ...]
    reference: Callable[..., object]  # tensors in, the original's outputs out
    reference_name: str  # the framework ``reference`` runs in, as a report key: torch_eager, onnxruntime, tvm

    def reference_ms(self, repeat: int = 20) -> float:
        """Median latency of the reference on the example inputs."""
        times = []
        with torch.inference_mode():
            self.reference(*self.example_inputs)
            for _ in range(repeat):
                start = time.perf_counter()
                self.reference(*self.example_inputs)
                times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2] * 1e3


def load(model: Model, example_inputs: Sequence | None, custom_convert_map: dict | None) -> Source:
    """The ``Source`` for any model ``tsir.optimize`` accepts."""
    if isinstance(model, tvm.IRModule):
        return from_relax(model, example_inputs)
    if isinstance(model, (str, os.PathLike)):
        return from_onnx(Path(model), example_inputs)
    if isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        if example_inputs is None:
            raise TsirError("a PyTorch model needs example_inputs, e.g. optimize(model, (torch.randn(1, 3, 32, 32),))")
        return from_torch(model, example_inputs, custom_convert_map)
    raise TsirError(
        f"cannot optimize a {type(model).__name__}; give a torch.nn.Module with example inputs, "
        "a path to an .onnx file, or a Relax tvm.IRModule"
    )


def from_torch(model, example_inputs: Sequence, custom_convert_map: dict | None) -> Source:
    """A PyTorch model; its inputs (any pytree of tensors) become the flat list the Relax ``main`` takes."""
    if isinstance(model, torch.export.ExportedProgram):
        program, model = model, model.module()
    else:
        program = export(model, example_inputs)
    flat, spec = pytree.flatten(tuple(example_inputs))
    reference = _FlatInputs(model, spec)
    return Source("torch", to_relax(program, custom_convert_map), tuple(flat), reference, "torch_eager")


@dataclass
class _FlatInputs:
    """``model`` called with flat tensors (rebuilt into its nested arguments); returns its outputs as they are."""

    model: Callable
    spec: object  # the pytree spec of the model's positional arguments

    def __call__(self, *tensors: torch.Tensor) -> object:
        return self.model(*pytree.unflatten(list(tensors), self.spec))


def from_relax(mod: tvm.IRModule, example_inputs: Sequence | None) -> Source:
    """A hand-written or imported Relax module; its own TVM build is the reference."""
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise TsirError("the Relax module has no function 'main'; name the entry function main")
    check_static(mod)
    params = mod["main"].params
    inputs = _inputs_for([(p.name, tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)) for p in params],
                         example_inputs)
    executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())

    def reference(*tensors: torch.Tensor) -> list[np.ndarray]:
        return flatten(vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in tensors]))

    return Source("relax", mod, inputs, reference, "tvm")


def from_onnx(path: Path, example_inputs: Sequence | None) -> Source:
    """An ONNX file, imported with ``tvm.relax.frontend.onnx``; ONNX Runtime is the reference."""
    import onnx
    import onnxruntime
    from tvm.relax.frontend.onnx import from_onnx as onnx_to_relax

    if path.suffix != ".onnx":
        raise TsirError(f"{str(path)!r} is not an .onnx file; give a path ending in .onnx")
    if not path.is_file():
        raise TsirError(f"ONNX file {str(path)!r} does not exist; check the path")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
        raise TsirError(f"{str(path)!r} is not a valid ONNX model ({err}); re-export it") from err
    proto = zero_pads_as_identity(proto)
    initializers = {init.name for init in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    specs = []
    for value in graph_inputs:
        dims = value.type.tensor_type.shape.dim
        if example_inputs is None and any(not d.HasField("dim_value") for d in dims):
            raise StaticShapeError(
                f"ONNX input {value.name!r} has a symbolic dimension; tsir needs static shapes: pass "
                "example_inputs, or export the model with fixed shapes"
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        specs.append((value.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in dims), str(dtype)))
    inputs = _inputs_for(specs, example_inputs)
    shapes = {name: list(t.shape) for (name, _, _), t in zip(specs, inputs, strict=True)}
    try:
        mod = onnx_to_relax(proto, shape_dict=shapes, dtype_dict={n: d for n, _, d in specs})
    except tvm.error.OpNotImplemented as err:
        raise UnsupportedOpError(f"the TVM ONNX frontend cannot convert {path.name}: {err}; replace those ops "
                                 "in the model before export") from err
    check_static(mod)
    mod = relax.transform.FoldConstant()(mod)  # the frontend computes shapes of constants at run time (R.shape_of)
    mod = clips_from_call_tir(mod)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [name for name, _, _ in specs]

    def reference(*tensors: torch.Tensor) -> list[np.ndarray]:
        return session.run(None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)})

    return Source("onnx", mod, inputs, reference, "onnxruntime")


def _inputs_for(specs: list[tuple[str, tuple, str]], given: Sequence | None) -> tuple[torch.Tensor, ...]:
    """``given`` checked against the model's inputs (as tensors; None in a shape is a symbolic size), or random
    inputs of the right types."""
    if given is None:
        gen = torch.Generator().manual_seed(0)
        return tuple(_random(shape, dtype, gen) for _, shape, dtype in specs)
    given = tuple(torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x for x in given)
    if len(given) != len(specs):
        raise TsirError(f"the model takes {len(specs)} inputs ({', '.join(n for n, _, _ in specs)}), "
                        f"{len(given)} example inputs were given")
    for (name, shape, dtype), x in zip(specs, given, strict=True):
        fits = len(x.shape) == len(shape) and all(w in (None, g) for w, g in zip(shape, x.shape, strict=False))
        if not fits or str(x.numpy().dtype) != dtype:
            raise TsirError(f"example input for {name!r} is {tuple(x.shape)} {x.numpy().dtype}; the model "
                            f"expects {shape} {dtype}")
    return given


def _random(shape: tuple[int, ...], dtype: str, gen: torch.Generator) -> torch.Tensor:
    """Normal floats; integers in [0, 2) so index inputs (token ids) stay valid for any table."""
    np_dtype = np.dtype(dtype)
    if np.issubdtype(np_dtype, np.floating):
        return torch.randn(shape, generator=gen).to(torch.from_numpy(np.zeros(0, np_dtype)).dtype)
    if np.issubdtype(np_dtype, np.integer):
        return torch.randint(0, 2, shape, generator=gen).to(torch.from_numpy(np.zeros(0, np_dtype)).dtype)
    if np_dtype == np.bool_:
        return torch.randint(0, 2, shape, generator=gen).bool()
    raise TsirError(f"cannot make example inputs of dtype {dtype}; pass example_inputs")
