"""ONNX input: zoo models exported to ONNX here, optimized through tvm.relax.frontend.onnx, checked by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from tsir import StaticShapeError, TsirError, UnsupportedOpError, optimize, zoo


def export_onnx(name: str, path, dynamic_batch: bool = False) -> zoo.ZooModel:
    entry = zoo.load(name)
    axes = {"x": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(entry.module, entry.example_inputs, str(path), input_names=["x"], dynamic_axes=axes,
                      dynamo=False, opset_version=17)
    return entry


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_onnx_zoo_model_optimizes_and_matches_onnxruntime(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    entry = export_onnx(name, path)
    result = optimize(path, budget_s=5, measure=False)
    report = result.report
    assert report["input"] == {"kind": "onnx", "name": f"{name}.onnx", "inputs": [
        {"shape": list(entry.example_inputs[0].shape), "dtype": "float32"}]}
    assert report["verification"]["status"] == "verified" and report["verification"]["reference"] == "onnxruntime"
    x = np.random.default_rng(1).standard_normal(entry.example_inputs[0].shape).astype("float32")
    want = onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(result.run([x])[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_onnx_rewrites_fire_like_the_torch_import(tmp_path):
    path = tmp_path / "mlp.onnx"
    export_onnx("mlp", path)
    report = optimize(path, budget_s=5, measure=False).report
    assert report["rules_fired"]["fusion"]["matmul_bias_to_linear"] == 3
    optimized = report["program"]["optimized"]  # three linear layers, as TVM ops or oneDNN calls
    assert optimized.get("linear", 0) + optimized.get("dnnl_linear", 0) == 3


def test_onnx_symbolic_batch_needs_example_inputs(tmp_path):
    path = tmp_path / "mlp.onnx"
    entry = export_onnx("mlp", path, dynamic_batch=True)
    with pytest.raises(StaticShapeError, match="pass example_inputs"):
        optimize(path, budget_s=5, measure=False)
    x = torch.randn(3, *entry.example_inputs[0].shape[1:])
    report = optimize(path, (x,), budget_s=5, measure=False).report
    assert report["input"]["inputs"][0]["shape"] == [3, 64] and report["verification"]["status"] == "verified"


def test_broken_or_missing_onnx_file_is_bad_input(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(TsirError, match="not a valid ONNX model"):
        optimize(broken, budget_s=5)
    with pytest.raises(TsirError, match="does not exist"):
        optimize(tmp_path / "missing.onnx", budget_s=5)


def test_onnx_op_the_frontend_lacks_is_named(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(UnsupportedOpError, match="Det.*replace those ops"):
        optimize(path, budget_s=5)
