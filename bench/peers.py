"""The peer runtimes at their expert settings: ONNX Runtime and OpenVINO.

``onnxruntime``: the model exported with ``torch.onnx.export(..., dynamo=True)``; for BERT/GPT/ViT-style
models (by the Hugging Face config's ``model_type``) rewritten by ONNX Runtime's transformer optimizer
(``optimize_model`` with that model type, the config's heads and hidden size, the documented default
``opt_level``), kept only when its outputs match the plain model's; a session at ``ORT_ENABLE_ALL``,
sequential, inputs and outputs bound once to pre-made OrtValues (``run_with_iobinding``: no conversion
per call). ``openvino``: ``ov.convert_model`` from the torch module (traced; when that fails, from its
``torch.export`` program, the reason in the notes), compiled for the CPU with
``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_PRECISION_HINT=f32`` (exact fp32, like the others), inputs
set once on the infer request. Both build a 1-thread and a 2-thread variant (at most the run's thread
count), time them alternately and keep the faster; the notes say which and both times.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tsir import suite

from . import policy
from .cases import Case
from .prepared import Prepared

# Hugging Face model_type -> ONNX Runtime transformer optimizer model_type
ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "electra": "bert", "albert": "bert",
                   "deberta-v2": "bert", "gpt2": "gpt2", "gpt_neo": "gpt2", "vit": "vit", "deit": "vit",
                   "beit": "vit", "clip_vision_model": "vit", "swin": "swin", "bart": "bart", "marian": "bart",
                   "t5": "t5"}
PICK_ROUNDS = 5  # alternating timed blocks per thread variant when choosing between them
PICK_BLOCK_S = 0.05

SETTINGS = {
    "onnxruntime": {"export": "torch.onnx.export(dynamo=True, optimize=True)",
                    "graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
                    "inter_op_num_threads": 1, "io_binding": "pre-made OrtValues, run_with_iobinding",
                    "transformer_optimizer": {"model_types": ORT_MODEL_TYPES, "opt_level": "documented default"},
                    "intra_op_num_threads": "best of 1 and 2",
                    "spinning": "session.intra_op.allow_spinning=0 under the passive policy"},
    "openvino": {"convert": "ov.convert_model(torch module, example_input), else of its torch.export program",
                 "device": "CPU",
                 "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                 "INFERENCE_NUM_THREADS": "best of 1 and 2", "inputs": "set once on the infer request"},
}


def thread_counts() -> list[int]:
    return [n for n in (1, 2) if n <= policy.threads()]


Variant = tuple[Callable[[], object], Callable[[], list[np.ndarray]], float | None]  # call, outputs, first call ms


def fastest(variants: dict[int, Variant]) -> Prepared:
    """The fastest of ``variants`` (threads -> variant), timed in alternating blocks. A variant's first call
    is timed here unless preparing it already made (and timed) one."""
    first, times = {}, {n: [] for n in variants}
    for n, (call, _, first_ms) in variants.items():
        start = time.perf_counter()
        call()
        first[n] = (time.perf_counter() - start) * 1e3 if first_ms is None else first_ms
    for _ in range(PICK_ROUNDS):
        for n, (call, _, _) in variants.items():
            calls = max(1, int(PICK_BLOCK_S * 1e3 / max(first[n], 1e-3)))
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[n].append((time.perf_counter() - start) * 1e3 / calls)
    medians = {n: float(np.median(t)) for n, t in times.items()}
    best = min(medians, key=medians.get)
    call, outputs, _ = variants[best]
    return Prepared(call, outputs, {"threads": best, "threads_ms": medians}, first_call_ms=first[best])


def onnxruntime(case: Case, budget_s: float) -> Prepared:
    import onnxruntime as ort

    from tsir.verify import compare

    arrays = [x.numpy() for x in case.inputs]
    notes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = suite.export_onnx(case.module, case.inputs, Path(tmp) / "model.onnx")
        path, notes["transformer_optimizer"] = transformer_optimized(plain, case.config, Path(tmp))
        if path != plain:  # the fused model must compute what the plain one does, else it is not used
            fused, reference = (ort_session(ort, p, policy.threads()) for p in (path, plain))
            check = compare(reference.run(None, _feeds(reference, arrays)), fused.run(None, _feeds(fused, arrays)))
            if not check.passed:
                notes["transformer_optimizer"] = f"not used: its outputs differ ({check.problem})"
                path = plain
        variants = {n: ort_bound(ort, ort_session(ort, path, n), arrays) for n in thread_counts()}
    prepared = fastest(variants)
    prepared.notes.update(notes)
    return prepared


def transformer_optimized(path: Path, config, tmp: Path) -> tuple[Path, str]:
    """The transformer optimizer's rewrite of ``path`` and what was done (or why not)."""
    model_type = ORT_MODEL_TYPES.get(getattr(config, "model_type", None))
    if model_type is None:
        return path, f"not applicable (model_type {getattr(config, 'model_type', None)!r})"
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    heads, hidden = (v if isinstance(v, int) else 0 for v in (heads, hidden))  # 0: detected from the graph
    try:
        optimized = optimize_model(str(path), model_type=model_type, num_heads=heads, hidden_size=hidden)
        out = tmp / "model.opt.onnx"
        optimized.save_model_to_file(str(out))
    except Exception as err:  # the plain model is then timed, with the reason recorded
        return path, f"failed, plain model used: {error_line(err)}"
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return out, f"{model_type} (num_heads={heads}, hidden_size={hidden}); fused {fused}"


def error_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}"


def ort_session(ort, path: Path, threads: int):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if policy.passive():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(arrays):
        raise RuntimeError(f"the ONNX model takes {len(names)} inputs, the torch model {len(arrays)}")
    return dict(zip(names, arrays, strict=True))


def ort_bound(ort, session, arrays: list[np.ndarray]) -> Variant:
    """The session with inputs and outputs bound once to OrtValues (output shapes from its first call, a plain
    run, timed)."""
    feeds = _feeds(session, arrays)
    start = time.perf_counter()
    shapes = session.run(None, feeds)
    first_ms = (time.perf_counter() - start) * 1e3
    binding = session.io_binding()
    inputs = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for name, a in feeds.items()}
    for name, value in inputs.items():
        binding.bind_ortvalue_input(name, value)
    outputs = [ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype) for a in shapes]
    for meta, value in zip(session.get_outputs(), outputs, strict=True):
        binding.bind_ortvalue_output(meta.name, value)

    def call():
        session.run_with_iobinding(binding)

    call.keep = (inputs, outputs)  # the bound OrtValues (and the arrays they view) live as long as the call
    return call, lambda: [v.numpy().copy() for v in outputs], first_ms


def openvino(case: Case, budget_s: float) -> Prepared:
    import openvino as ov

    model, how = ov_model(ov, case)
    core = ov.Core()
    arrays = [np.ascontiguousarray(x.numpy()) for x in case.inputs]
    variants = {}
    for n in thread_counts():
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": n})
        variants[n] = ov_request(ov, compiled, arrays)
    del model
    prepared = fastest(variants)
    prepared.notes["converted_from"] = how
    return prepared


def ov_model(ov, case: Case):
    """``ov.convert_model`` of the torch module (traced), else of its ``torch.export`` program; raises with
    both reasons when neither converts."""
    import torch

    try:
        return ov.convert_model(case.module, example_input=case.inputs), "torch module"
    except Exception as err:
        traced = _ov_error(err)
    try:
        program = torch.export.export(case.module, case.inputs)
        return ov.convert_model(program), f"torch.export program (the traced module failed: {traced})"
    except Exception as err:
        raise RuntimeError(f"ov.convert_model failed: traced module: {traced}; torch.export program: "
                           f"{_ov_error(err)}") from err


def _ov_error(err: BaseException) -> str:
    """OpenVINO's summary of what did not convert (the "-- ..." lines after "Summary:"), else the first line."""
    lines = str(err).splitlines()
    lines = lines[lines.index("Summary:") + 1:] if "Summary:" in lines else lines
    summary = [line.lstrip("- ").strip() for line in lines if line.startswith("-- ")]
    return "; ".join(summary) or error_line(err)


def ov_request(ov, compiled, arrays: list[np.ndarray]) -> Variant:
    request = compiled.create_infer_request()
    if len(compiled.inputs) != len(arrays):
        raise RuntimeError(f"the OpenVINO model takes {len(compiled.inputs)} inputs, the torch model {len(arrays)}")
    for i, a in enumerate(arrays):
        request.set_input_tensor(i, ov.Tensor(a))
    count = len(compiled.outputs)
    return request.infer, lambda: [np.array(request.get_output_tensor(i).data) for i in range(count)], None
