"""Tree ensembles as double-precision ONNX graphs: every horizon of a family in one ``TreeEnsemble`` node.

Why not onnxmltools: its LightGBM and XGBoost converters emit ``TreeEnsembleClassifier/Regressor`` with
float32 thresholds and float32 inputs. A split at a double threshold then routes values in the rounding
gap the other way; on the futures set that moved LightGBM probabilities by up to 3.5e-3. The ONNX-ML opset
5 ``TreeEnsemble`` operator takes thresholds and leaf weights as tensors of the input's type, so a double
graph reproduces the native models' routing exactly (measured gap: see the tests and manifests).

* LightGBM compares ``x <= threshold`` in double; NaN follows ``default_left`` when the split's
  ``missing_type`` is ``NaN``, and is read as 0.0 when it is ``None``.
* XGBoost compares ``float32(x) < threshold`` with float32 thresholds: the graph casts the input to
  float32 and back to double, which routes every value exactly as XGBoost does; NaN follows ``missing``.

The graph: ``features`` double [N, F] → one TreeEnsemble with one target per horizon (sum of leaves) →
``+ base margin`` → ``Sigmoid`` → ``p_up`` double [N, H].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ML_OPSET = 5
ONNX_OPSET = 21
BRANCH_LEQ = 0
BRANCH_LT = 1


@dataclass
class FlatTrees:
    """Nodes and leaves of many trees in the layout of ONNX-ML ``TreeEnsemble``."""

    roots: list[int] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    mode: list[int] = field(default_factory=list)
    split: list[float] = field(default_factory=list)
    true_id: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_id: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    leaf_target: list[int] = field(default_factory=list)
    leaf_weight: list[float] = field(default_factory=list)

    def _node(self) -> int:
        for lst in (self.feature, self.mode, self.split, self.true_id, self.true_leaf):
            lst.append(0)
        for lst2 in (self.false_id, self.false_leaf, self.missing_true):
            lst2.append(0)
        return len(self.feature) - 1

    def _leaf(self, target: int, weight: float) -> int:
        self.leaf_target.append(target)
        self.leaf_weight.append(weight)
        return len(self.leaf_weight) - 1

    def stump(self, target: int, weight: float) -> None:
        """A single-leaf tree (the ONNX layout needs a root node: both branches reach the leaf)."""
        node = self._node()
        leaf = self._leaf(target, weight)
        self.roots.append(node)
        self.mode[node] = BRANCH_LEQ
        self.split[node] = 0.0
        self.true_id[node] = self.false_id[node] = leaf
        self.true_leaf[node] = self.false_leaf[node] = 1

    # ------------------------------------------------------------------ LightGBM
    def add_lightgbm(self, booster: Any, target: int) -> None:
        for info in booster.dump_model()["tree_info"]:
            root = info["tree_structure"]
            if "leaf_value" in root:
                self.stump(target, float(root["leaf_value"]))
            else:
                self.roots.append(self._lgbm_node(root, target))

    def _lgbm_child(self, child: dict[str, Any], target: int) -> tuple[int, int]:
        if "leaf_value" in child:
            return self._leaf(target, float(child["leaf_value"])), 1
        return self._lgbm_node(child, target), 0

    def _lgbm_node(self, node: dict[str, Any], target: int) -> int:
        if node["decision_type"] != "<=":
            raise ValueError(f"unsupported LightGBM decision type {node['decision_type']!r}")
        idx = self._node()
        threshold = float(node["threshold"])
        missing = node["missing_type"]
        if missing == "NaN":
            nan_left = bool(node["default_left"])
        elif missing == "None":
            nan_left = threshold >= 0.0  # LightGBM reads NaN as 0.0
        else:
            raise ValueError(f"unsupported LightGBM missing_type {missing!r} (zero_as_missing)")
        self.feature[idx] = int(node["split_feature"])
        self.mode[idx] = BRANCH_LEQ
        self.split[idx] = threshold
        self.missing_true[idx] = int(nan_left)
        self.true_id[idx], self.true_leaf[idx] = self._lgbm_child(node["left_child"], target)
        self.false_id[idx], self.false_leaf[idx] = self._lgbm_child(node["right_child"], target)
        return idx

    # ------------------------------------------------------------------ XGBoost
    def add_xgboost(self, booster: Any, target: int) -> None:
        model = json.loads(booster.save_raw("json"))
        trees = model["learner"]["gradient_booster"]["model"]["trees"]
        for tree in trees:
            left = tree["left_children"]
            if len(left) == 1 or left[0] == -1:
                self.stump(target, float(np.float32(tree["base_weights"][0])))
                continue
            self.roots.append(self._xgb_node(tree, 0, target))

    def _xgb_child(self, tree: dict[str, Any], nid: int, target: int) -> tuple[int, int]:
        if tree["left_children"][nid] == -1:
            return self._leaf(target, float(np.float32(tree["base_weights"][nid]))), 1
        return self._xgb_node(tree, nid, target), 0

    def _xgb_node(self, tree: dict[str, Any], nid: int, target: int) -> int:
        idx = self._node()
        self.feature[idx] = int(tree["split_indices"][nid])
        self.mode[idx] = BRANCH_LT
        self.split[idx] = float(np.float32(tree["split_conditions"][nid]))
        self.missing_true[idx] = int(tree["default_left"][nid])
        self.true_id[idx], self.true_leaf[idx] = self._xgb_child(tree, tree["left_children"][nid], target)
        self.false_id[idx], self.false_leaf[idx] = self._xgb_child(tree, tree["right_children"][nid], target)
        return idx


def xgboost_base_margin(booster: Any) -> float:
    """The booster's base score as a margin (XGBoost stores it as a probability for logistic loss)."""
    cfg = json.loads(booster.save_config())
    raw = cfg["learner"]["learner_model_param"]["base_score"]
    base = float(str(raw).strip("[]"))
    return math.log(base / (1.0 - base))


def ensemble_model(
    trees: FlatTrees,
    base_margins: list[float],
    n_features: int,
    *,
    float32_input: bool,
    doc: str,
) -> onnx.ModelProto:
    """One graph scoring every horizon: ``features`` double [N, F] → ``p_up`` double [N, H]."""
    n_targets = len(base_margins)
    nodes: list[onnx.NodeProto] = []
    x = "features"
    if float32_input:
        nodes.append(helper.make_node("Cast", [x], ["x32"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Cast", ["x32"], ["x64"], to=TensorProto.DOUBLE))
        x = "x64"
    nodes.append(
        helper.make_node(
            "TreeEnsemble",
            [x],
            ["margin_trees"],
            domain="ai.onnx.ml",
            aggregate_function=1,  # SUM
            post_transform=0,
            n_targets=n_targets,
            tree_roots=trees.roots,
            nodes_featureids=trees.feature,
            nodes_modes=numpy_helper.from_array(np.array(trees.mode, dtype=np.uint8)),
            nodes_splits=numpy_helper.from_array(np.array(trees.split, dtype=np.float64)),
            nodes_truenodeids=trees.true_id,
            nodes_trueleafs=trees.true_leaf,
            nodes_falsenodeids=trees.false_id,
            nodes_falseleafs=trees.false_leaf,
            nodes_missing_value_tracks_true=trees.missing_true,
            leaf_targetids=trees.leaf_target,
            leaf_weights=numpy_helper.from_array(np.array(trees.leaf_weight, dtype=np.float64)),
        )
    )
    nodes.append(helper.make_node("Add", ["margin_trees", "base_margin"], ["margin"]))
    nodes.append(helper.make_node("Sigmoid", ["margin"], ["p_up"]))
    graph = helper.make_graph(
        nodes,
        "trees",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["n", n_features])],
        [helper.make_tensor_value_info("p_up", TensorProto.DOUBLE, ["n", n_targets])],
        initializer=[numpy_helper.from_array(np.array(base_margins, dtype=np.float64), "base_margin")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="memed",
        doc_string=doc,
    )
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model
