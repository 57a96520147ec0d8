"""ONNX export of the torch nets (trainers only).

Uses the TorchScript-based exporter (``dynamo=False``): it handles ``nn.LSTM`` with state inputs and
needs no onnxscript; its deprecation warning is silenced here, in one place.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch

from memed.models.nets import LstmNet, LstmStep, TransformerNet, TransformerServe

OPSET = 17


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]], doc: str) -> onnx.ModelProto:  # fmt: skip
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf,  # type: ignore[arg-type]
            input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = doc
    model.producer_name = "memed"
    onnx.checker.check_model(model, full_check=True)
    return model


def export_lstm(net: LstmNet, doc: str) -> onnx.ModelProto:
    """``features`` double [N, F], ``h``, ``c`` float [L, N, hidden] → ``p_up`` double [N, H], ``h_out``,
    ``c_out``."""
    n_features = net.lstm.input_size
    h, c = net.zero_state(2)
    x = torch.zeros(2, n_features, dtype=torch.float64)
    axes = {k: {0: "n"} for k in ("features", "p_up")} | {k: {1: "n"} for k in ("h", "c", "h_out", "c_out")}
    return _export(LstmStep(net), (x, h, c), ["features", "h", "c"], ["p_up", "h_out", "c_out"], axes, doc)


def export_transformer(net: TransformerNet, doc: str) -> onnx.ModelProto:
    """``window`` double [N, W, F] → ``p_up`` double [N, H]."""
    x = torch.zeros(2, net.window, net.proj.in_features, dtype=torch.float64)
    axes = {"window": {0: "n"}, "p_up": {0: "n"}}
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder kernel has no ONNX symbolic
    try:
        return _export(TransformerServe(net), (x,), ["window"], ["p_up"], axes, doc)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
