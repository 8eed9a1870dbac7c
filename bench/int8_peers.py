"""The int8 tools a user would run instead of tsir's approximate mode, on the same calibration data.

``onnxruntime_int8``: the fp32 ONNX export (BERT-class models through ONNX Runtime's transformer optimizer
first, as for the fp32 peer), ``quant_pre_process``, then the documented recipes, each scored on the
held-out data: static QDQ quantization calibrated on the calibration set (MinMax, per-channel int8
weights, uint8 activations: the x86 VNNI layout ONNX Runtime recommends) and dynamic quantization (int8
weights per tensor or per channel, activations quantized per call: the recipe it recommends for
transformers). ``openvino_int8``: ``ov.convert_model`` of the torch module, then NNCF post-training
quantization (``nncf.quantize``, the whole calibration set, ``ModelType.TRANSFORMER`` for transformers).
Each keeps the fastest recipe within the held-out budget (else the most accurate, marked outside it), with 1
or 2 threads, whichever is faster.

The data comes as an ``.npz`` (``write_data``): the calibration and held-out inputs, the held-out labels
(if any), the original model's held-out outputs, the metric and the largest accepted drop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tsir import suite
from tsir.approx.budget import METRICS, Budget, run_batched

from . import peers, policy
from .cases import Case
from .prepared import Prepared

SETTINGS = {
    "onnxruntime_int8": {"recipes": {"static": "quant_pre_process, quantize_static(QDQ, MinMax, per_channel, "
                                               "activations QUInt8, weights QInt8)",
                                     "dynamic": "quantize_dynamic(weights QInt8)",
                                     "dynamic_per_channel": "quantize_dynamic(per_channel, weights QInt8)"},
                         "transformer_optimizer": "as the fp32 peer, before quantizing",
                         "session": "as the fp32 peer (ORT_ENABLE_ALL, I/O binding, best of 1 and 2 threads)",
                         "pick": "fastest recipe within the held-out budget"},
    "openvino_int8": {"quantizer": "nncf.quantize (post-training, whole calibration set; ModelType.TRANSFORMER "
                                   "for transformers)", "device": "CPU", "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_NUM_THREADS": "best of 1 and 2"},
}


def write_data(path: Path, budget: Budget, reference: np.ndarray) -> Path:
    """``budget``'s data and ``reference`` (the original model's first output on the held-out inputs) as .npz."""
    data = budget.data
    if not isinstance(budget.metric, str):
        raise ValueError("the int8 peers need a named metric (top1, cosine, relative_error)")
    arrays = {f"calibration_{i}": a for i, a in enumerate(data.calibration)}
    arrays |= {f"heldout_{i}": a for i, a in enumerate(data.heldout)}
    if data.heldout_labels is not None:
        arrays["heldout_labels"] = data.heldout_labels
    np.savez(path, reference=reference, metric=budget.metric, max_drop=budget.max_drop, **arrays)
    return path


class _Data:
    def __init__(self, path: str) -> None:
        with np.load(path) as f:
            self.calibration = _inputs(f, "calibration")
            self.heldout = _inputs(f, "heldout")
            self.labels = f["heldout_labels"] if "heldout_labels" in f else None
            self.reference = f["reference"]
            self.metric, self.max_drop = str(f["metric"]), float(f["max_drop"])

    def score(self, outputs: np.ndarray) -> dict:
        """The held-out metric of ``outputs`` beside the original's, and whether the drop is within budget."""
        metric = METRICS[self.metric]
        original, optimized = (metric(o, self.reference, self.labels) for o in (self.reference, outputs))
        return {"metric": self.metric, "original": original, "optimized": optimized,
                "within_budget": bool(original - optimized <= self.max_drop)}


def _inputs(f, prefix: str) -> list[np.ndarray]:
    return [f[f"{prefix}_{i}"] for i in range(sum(k.removeprefix(prefix + "_").isdigit() for k in f.files))]


def _calibration_batches(arrays: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """``arrays`` cut into whole model-sized batches (a partial last one is dropped)."""
    return [[np.ascontiguousarray(a[i:i + batch]) for a in arrays] for i in range(0, len(arrays[0]) - batch + 1, batch)]


def _heldout_outputs(run: Callable[[list[np.ndarray]], np.ndarray], data: _Data, batch: int) -> np.ndarray:
    """``run``'s output on every held-out example, as approximate mode scores its candidates (``run_batched``)."""
    return run_batched(lambda chunk: [run([np.ascontiguousarray(c) for c in chunk])], data.heldout, batch)


def _pick(recipes: dict[str, dict]) -> str:
    """The fastest recipe within budget, else the most accurate."""
    within = [n for n, r in recipes.items() if r["approx"]["within_budget"]]
    if within:
        return min(within, key=lambda n: recipes[n]["ms"])
    return max(recipes, key=lambda n: recipes[n]["approx"]["optimized"])


def _choose(built: dict[str, tuple[dict, dict]]) -> Prepared:
    """``built``: recipe -> (thread variants, notes with "approx" and "artifact_bytes") -> the picked recipe's
    fastest variant, every recipe's numbers in its notes."""
    timed = {}
    for name, (variants, notes) in built.items():
        prepared = peers.fastest(variants)
        timed[name] = {**notes, "prepared": prepared, "ms": min(prepared.notes["threads_ms"].values())}
    best = _pick(timed)
    prepared = timed[best]["prepared"]
    prepared.notes.update({"recipe": best, "approx": timed[best]["approx"],
                           "artifact_bytes": timed[best]["artifact_bytes"],
                           "recipes": {n: {k: v for k, v in t.items() if k != "prepared"} for n, t in timed.items()}})
    return prepared


def _ort_run(session, names: list[str]) -> Callable[[list[np.ndarray]], np.ndarray]:
    return lambda chunk: session.run(None, dict(zip(names, chunk, strict=True)))[0]


def onnxruntime_int8(case: Case, budget_s: float, data: str) -> Prepared:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    d = _Data(data)
    batch = len(case.inputs[0])
    built = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = suite.export_onnx(case.module, case.inputs, tmp / "model.onnx")
        fp32, optimizer = peers.transformer_optimized(plain, case.config, tmp)
        pre = tmp / "model.pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_optimization=fp32 != plain)
            preprocess = "quant_pre_process"
        except Exception as err:  # its symbolic shape inference fails on some fused transformer graphs
            quant_pre_process(str(fp32), str(pre), skip_optimization=fp32 != plain, skip_symbolic_shape=True)
            preprocess = f"quant_pre_process without symbolic shapes ({peers.error_line(err)})"
        names = [i.name for i in ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([dict(zip(names, chunk, strict=True))
                                   for chunk in _calibration_batches(d.calibration, batch)])

            def get_next(self):
                return next(self.items, None)

        recipes = {"static": lambda out: quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                                                         per_channel=True, activation_type=QuantType.QUInt8,
                                                         weight_type=QuantType.QInt8),
                   "dynamic": lambda out: quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8),
                   "dynamic_per_channel": lambda out: quantize_dynamic(str(pre), str(out), per_channel=True,
                                                                       weight_type=QuantType.QInt8)}
        for name, quantize in recipes.items():
            out = tmp / f"model.{name}.onnx"
            try:
                quantize(out)
            except Exception as err:  # a recipe that does not apply to this model is noted, the other kept
                built[name] = None, {"error": peers.error_line(err)}
                continue
            session = peers.ort_session(ort, out, policy.threads())
            outputs = _heldout_outputs(_ort_run(session, names), d, batch)
            variants = {n: peers.ort_bound(ort, peers.ort_session(ort, out, n), [x.numpy() for x in case.inputs])
                        for n in peers.thread_counts()}
            built[name] = variants, {"approx": d.score(outputs), "artifact_bytes": out.stat().st_size}
    failed = {n: notes["error"] for n, (variants, notes) in built.items() if variants is None}
    if len(failed) == len(built):
        raise RuntimeError(f"no ONNX Runtime quantization recipe applied: {failed}")
    prepared = _choose({n: b for n, b in built.items() if n not in failed})
    prepared.notes.update({"transformer_optimizer": optimizer, "preprocess": preprocess, "failed_recipes": failed})
    return prepared


def openvino_int8(case: Case, budget_s: float, data: str) -> Prepared:
    import nncf
    import openvino as ov

    d = _Data(data)
    batch = len(case.inputs[0])
    model, how = peers.ov_model(ov, case)
    calibration = [tuple(chunk) for chunk in _calibration_batches(d.calibration, batch)]
    transformer = case.config is not None
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        artifact_bytes = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    core = ov.Core()
    compiled = {n: core.compile_model(quantized, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": n})
                for n in peers.thread_counts()}
    request = next(iter(compiled.values())).create_infer_request()
    outputs = _heldout_outputs(lambda chunk: np.array(request.infer(chunk)[0]), d, batch)
    arrays = [np.ascontiguousarray(x.numpy()) for x in case.inputs]
    variants = {n: peers.ov_request(ov, c, arrays) for n, c in compiled.items()}
    prepared = _choose({"nncf": (variants, {"approx": d.score(outputs), "artifact_bytes": artifact_bytes})})
    prepared.notes["converted_from"] = how
    return prepared
