"""Inputs to verify on: random draws inside each input's valid range, or the user's own data.

A random draw gives float inputs standard-normal values. An integer input used as the indices of a
``take`` on a constant table of N rows (a token id into an embedding) is drawn in [0, N); any other integer
input stays inside its example's min..max. The user's data is a ``.npz`` file or arrays, one per model input,
shaped like its example input (one draw) or with one more leading axis (that many draws).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from tsir.errors import TsirError

Draws = dict[str, list[torch.Tensor]]  # label (for messages) -> one tensor per model input
Constant = tvm.ir.expr.GenericConst
UserData = str | os.PathLike | Mapping[str, np.ndarray] | Sequence[np.ndarray]
# ops that hand their first argument's values on unchanged (an index stays an index)
_INDEX_PRESERVING = ("relax.astype", "relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.permute_dims",
                     "relax.broadcast_to", "relax.flatten")


def index_rows(mod: tvm.IRModule) -> dict[int, int]:
    """Parameter number of ``main`` -> rows of the smallest constant table it indexes through ``take``."""
    main = mod["main"]
    origin = {param: i for i, param in enumerate(main.params)}  # var -> the parameter whose values it carries
    constants: dict = {}
    rows: dict[int, int] = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, Constant):
                constants[binding.var] = value
            if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)) or not value.args:
                continue
            if value.op.name in _INDEX_PRESERVING and value.args[0] in origin:
                origin[binding.var] = origin[value.args[0]]
            elif value.op.name == "relax.take" and value.args[1] in origin:
                table = constants.get(value.args[0], value.args[0])
                if isinstance(table, Constant):
                    axis = value.attrs.axis
                    shape = table.value.shape
                    n = int(np.prod(shape)) if axis is None else int(shape[int(axis)])
                    param = origin[value.args[1]]
                    rows[param] = min(rows.get(param, n), n)
    return rows


def integer_ranges(examples: Sequence[torch.Tensor], rows: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Input number -> [low, high) of the integer inputs' random values."""
    out = {}
    for i, ex in enumerate(examples):
        if ex.dtype == torch.bool:
            out[i] = (0, 2)
        elif not ex.dtype.is_floating_point:
            out[i] = (0, rows[i]) if i in rows else (int(ex.min()), int(ex.max()) + 1)
    return out


def fresh_inputs(examples: Sequence[torch.Tensor], seed: int,
                 ranges: dict[int, tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """New random inputs shaped like ``examples``; integer input ``i`` in ``ranges[i]`` (default: its
    example's min..max)."""
    ranges = integer_ranges(examples, {}) if ranges is None else ranges
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, ex in enumerate(examples):
        if ex.dtype.is_floating_point:
            out.append(torch.randn(ex.shape, generator=gen, dtype=ex.dtype))
        else:
            low, high = ranges[i]
            out.append(torch.randint(low, high, ex.shape, generator=gen).to(ex.dtype))
    return out


def random_draws(mod: tvm.IRModule, examples: Sequence[torch.Tensor], seeds: Sequence[int]) -> tuple[Draws, dict]:
    """One draw per seed, and what the report records about them."""
    ranges = integer_ranges(examples, index_rows(mod))
    names = input_names(mod)
    draws = {f"random inputs (seed {s})": fresh_inputs(examples, s, ranges) for s in seeds}
    return draws, {"kind": "random", "seeds": list(seeds),
                   "integer_ranges": {names[i]: list(r) for i, r in ranges.items()}}


def input_names(mod: tvm.IRModule) -> list[str]:
    return [p.name for p in mod["main"].params]


def user_draws(data: UserData, mod: tvm.IRModule, examples: Sequence[torch.Tensor]) -> tuple[Draws, dict]:
    """The user's verification data as draws (see the module docstring), and what the report records."""
    names = input_names(mod)
    source = "arrays"
    if isinstance(data, (str, os.PathLike)):
        source = str(data)
        data = load_npz(Path(data), "verify data", "np.savez(path, input_name=array, ...)")
        positional = [f"arr_{i}" for i in range(len(names))]
        if set(data) == set(positional) and set(names) != set(positional):  # np.savez(path, a, b): in order
            data = [data[k] for k in positional]
    if isinstance(data, Mapping):
        missing, extra = [n for n in names if n not in data], [k for k in data if k not in names]
        if missing or extra:
            problems = ([f"no array for input(s) {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"arrays {', '.join(map(repr, extra))} that are no model input"] if extra else [])
            raise TsirError(f"verify data ({source}) has {' and '.join(problems)}; the model takes "
                            f"{', '.join(names)}: save one array per input, e.g. np.savez(path, "
                            f"{', '.join(f'{n}=...' for n in names)})")
        arrays = [np.asarray(data[n]) for n in names]
    else:
        arrays = [np.asarray(a) for a in data]
        if len(arrays) != len(names):
            raise TsirError(f"verify data ({source}) has {len(arrays)} arrays; the model takes {len(names)} inputs "
                            f"({', '.join(names)}): give one array per input")
    counts = {_examples_in(a, ex, name, source) for a, ex, name in zip(arrays, examples, names, strict=True)}
    if len(counts) != 1:
        raise TsirError(f"verify data ({source}) holds different numbers of examples per input; give every input "
                        "the same number")
    count = counts.pop()
    draws = {f"verify data ({source}) example {d}": [torch.from_numpy(np.array(a if count is None else a[d]))
                                                      for a in arrays] for d in range(count or 1)}
    return draws, {"kind": "data", "source": source, "examples": count or 1}


def load_npz(path: Path, label: str, example: str) -> dict[str, np.ndarray]:
    """The named arrays of the ``.npz`` at ``path``; a clear error naming the ``label`` file (``verify data``,
    ``--data``) and how to write one (``example``) when it is missing or no archive of arrays."""
    if not path.is_file():
        raise TsirError(f"{label} file {str(path)!r} does not exist; check the path")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an archive of named arrays")
        with npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise TsirError(f"{label} file {str(path)!r} is not a .npz archive ({err}); write it with {example}") from err


def _examples_in(array: np.ndarray, example: torch.Tensor, name: str, source: str) -> int | None:
    """None when ``array`` is one example; N when it stacks N; a clear error when it is neither."""
    want, dtype = tuple(example.shape), example.numpy().dtype
    if array.dtype == dtype and array.shape == want:
        return None
    if array.dtype == dtype and array.ndim == len(want) + 1 and array.shape[1:] == want and array.shape[0] > 0:
        return array.shape[0]
    raise TsirError(f"verify data ({source}) array {name!r} is {array.shape} {array.dtype}; the model takes {want} "
                    f"{dtype}: give that shape and dtype, or (N, {', '.join(map(str, want))}) for N examples")
