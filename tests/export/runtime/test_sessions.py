"""The installed onnxruntime, as the service opens models (``make_session``), refuses a model
whose external data points outside its folder: the reason pyproject.toml asks for
onnxruntime >= 1.24.1 (1.23.2 loads it; checked when the floor was set)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.runtime.sessions import make_session


def _model_reading(location: str) -> onnx.ModelProto:
    """y = x @ w, with w's 16 bytes stored at ``location``, relative to the model's folder."""
    w = numpy_helper.from_array(np.full((2, 2), 2.0, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("location", ["../outside.bin", "/OUTSIDE"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, location):
    folder = tmp_path / "bundle"
    folder.mkdir()
    outside = tmp_path / "outside.bin"
    np.full((2, 2), 2.0, np.float32).tofile(outside)
    location = location.replace("/OUTSIDE", str(outside))
    (folder / "m.onnx").write_bytes(_model_reading(location).SerializeToString())
    with pytest.raises(Exception, match="External data path"):
        make_session(folder / "m.onnx", ["CPUExecutionProvider"])
    # The same model reading a file inside its folder loads: the refusal is the path's.
    (folder / "inside.bin").write_bytes(outside.read_bytes())
    (folder / "m.onnx").write_bytes(_model_reading("inside.bin").SerializeToString())
    session = make_session(folder / "m.onnx", ["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((1, 2), np.float32)})
    np.testing.assert_allclose(y, [[4.0, 4.0]])
