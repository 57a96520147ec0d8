"""Logistic regression (one weight column per horizon) as a double-precision ONNX graph, scaler inside."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from memed.models.scaler import CLIP, Scaler

ONNX_OPSET = 21


def scaler_nodes(scaler: Scaler, x: str, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``out = where(isnan(z), 0, clip((x - mean) / scale))`` in double."""
    inits = [
        numpy_helper.from_array(scaler.mean, "scaler_mean"),
        numpy_helper.from_array(scaler.scale, "scaler_scale"),
        numpy_helper.from_array(np.array(-CLIP), "clip_lo"),
        numpy_helper.from_array(np.array(CLIP), "clip_hi"),
        numpy_helper.from_array(np.array(0.0), "zero"),
    ]
    nodes = [
        helper.make_node("Sub", [x, "scaler_mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scaler_scale"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "clip_lo", "clip_hi"], ["clipped"]),
        helper.make_node("IsNaN", ["clipped"], ["missing"]),
        helper.make_node("Where", ["missing", "zero", "clipped"], [out]),
    ]
    return nodes, inits


def logistic_model(scaler: Scaler, weights: np.ndarray, bias: np.ndarray, doc: str) -> onnx.ModelProto:
    """``features`` double [N, F] → ``p_up = sigmoid(z @ W + b)`` double [N, H]."""
    n_features, n_targets = weights.shape
    nodes, inits = scaler_nodes(scaler, "features", "z")
    nodes += [
        helper.make_node("MatMul", ["z", "weights"], ["zw"]),
        helper.make_node("Add", ["zw", "bias"], ["margin"]),
        helper.make_node("Sigmoid", ["margin"], ["p_up"]),
    ]
    inits += [
        numpy_helper.from_array(weights.astype(np.float64), "weights"),
        numpy_helper.from_array(bias.astype(np.float64), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "logreg",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["n", n_features])],
        [helper.make_tensor_value_info("p_up", TensorProto.DOUBLE, ["n", n_targets])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="memed", doc_string=doc
    )
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def logistic_predict(scaler: Scaler, weights: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The same model in numpy (the native side of the parity test)."""
    margin = scaler.transform(x) @ weights + bias
    p: np.ndarray = 1.0 / (1.0 + np.exp(-margin))
    return p
