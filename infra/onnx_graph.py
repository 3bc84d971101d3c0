"""ONNX graph rewrites applied in memory at load time."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an exported graph that accepts any batch size.

    Some exports fix the batch to 1 twice: in the input/output shapes and in a constant
    Reshape target (``mobilefacenet_128d``: ``[1, -1]``; FaceMesh: ``[1, 1, 1, 1404]``).
    onnxruntime then rejects N > 1, and onnx2torch silently returns a wrong ``[1, D·N]``
    tensor. Here the batch axes become a symbolic ``N`` and such a target becomes
    ``[-1, …]``; a ``-1`` in the rest of the target is replaced by the graph output's static
    size (so the result has one ``-1``). A graph without the quirk comes back unchanged.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        shape = value.type.tensor_type.shape
        if shape.dim and shape.dim[0].dim_value == 1:
            shape.dim[0].dim_param = "N"
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]])
        if target.ndim != 1 or len(target) < 2 or target[0] != 1:
            continue
        rest = list(target[1:])
        if -1 in rest:
            if len(rest) != len(out_dims) or not all(out_dims):
                continue  # cannot infer the size safely; leave the graph as exported
            rest = out_dims
        fixed = numpy_helper.from_array(np.array([-1, *rest], dtype=target.dtype), node.input[1])
        inits[node.input[1]].CopyFrom(fixed)
    return model


def batch_major(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a batch-1 detector graph whose flattened head outputs stack images in order.

    SCRFD exports end each head in ``Transpose(perm=[2, 3, 0, 1])`` then ``Reshape([-1, C])``:
    with one image the size-1 batch axis can sit anywhere, but with N images the anchors of
    all images come out interleaved. Such a Transpose (its output read only by a Reshape whose
    constant target starts with ``-1``) gets the batch axis moved first, keeping the order of
    the other axes, so output rows ``[i·L, (i+1)·L)`` are image ``i``'s. At batch 1 the graph
    computes exactly what it did (only a size-1 axis moves). Input batch axes become ``N``.
    """
    model = batchable(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if not perm or perm[0] == 0:
            continue
        users = readers.get(node.output[0], [])
        flattens = all(
            u.op_type == "Reshape"
            and u.input[1] in inits
            and inits[u.input[1]].ndim == 1
            and inits[u.input[1]][0] == -1
            for u in users
        )
        if not users or not flattens:
            continue
        for a in node.attribute:
            if a.name == "perm":
                a.ints[:] = [0, *[p for p in perm if p != 0]]
    return model
