"""onnx2torch converters for operator versions newer than it knows, where the newer version means
the same as an older one for the graphs nnspec loads (float tensors, default new attributes).

torch.onnx.export writes opset 18-20. onnx2torch converts, e.g., Reshape up to version 14 and Pad up
to 13, so any such export with a Reshape (version 19) or a Pad (18/19) did not load. Each alias
here hands the node to the older version's converter, or refuses it (NotImplementedError, the
"cannot convert" error) where the newer version's extra meaning is in use: Pad's ``axes`` input or
``wrap`` mode, AveragePool's ``dilations``, Cast's float8 ``saturate``. Registered through
onnx2torch's own ``add_converter``, once, and only for versions it has no converter of its own
for; so is opset 20's Gelu, as torch's GELU (exact or tanh-approximated, as the node says). Graphs that need more go through onnx's version converter (``rewrites.downgrade_opset``)."""

from __future__ import annotations

# (operator, newer versions, the older version whose converter they take)
ALIASES = (
    ("Pad", (18, 19, 21), 13),
    ("AveragePool", (19,), 11),
    ("Constant", (19, 21), 13),
    ("Identity", (19, 21), 16),
    ("Reshape", (19, 21), 14),
    ("Shape", (19, 21), 15),
    ("Cast", (19, 21), 13),
    ("Flatten", (21,), 13),
    ("Transpose", (21,), 13),
    ("Unsqueeze", (21,), 13),
    ("Squeeze", (21,), 13),
)


_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from onnx2torch.node_converters.registry import add_converter, get_converter

    for op_type, versions, older in ALIASES:
        try:
            base = get_converter(op_type, older)
        except NotImplementedError:  # pragma: no cover - an onnx2torch without the older converter
            continue
        for version in versions:
            try:
                get_converter(op_type, version)  # onnx2torch's own, or the alias registered before
            except NotImplementedError:
                add_converter(operation_type=op_type, version=version)(_alias(op_type, version, base))
    try:
        get_converter("Gelu", 20)
    except NotImplementedError:  # opset 20's Gelu (torch.onnx.export writes it there): torch's GELU
        add_converter(operation_type="Gelu", version=20)(_gelu)


def _gelu(node, graph):  # pylint: disable=unused-argument
    import torch
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    return OperationConverterResult(torch_module=torch.nn.GELU(approximate=approximate),
                                    onnx_mapping=onnx_mapping_from_node(node=node))


def _alias(op_type: str, version: int, base):
    def convert(node, graph):
        refused = _extra_meaning(op_type, node)
        if refused:
            raise NotImplementedError(f"Converter is not implemented (operation_type='{op_type}', "
                                      f"version={version}: {refused})")
        return base(node, graph)
    return convert


def _extra_meaning(op_type: str, node) -> str | None:
    """What the node uses of its version's additions, or None."""
    attrs = node.attributes
    if op_type == "Pad":
        if len(node.input_values) > 3 and node.input_values[3]:
            return "axes input"
        if attrs.get("mode", "constant") == "wrap":
            return "mode wrap"
    if op_type == "AveragePool" and any(d != 1 for d in attrs.get("dilations", [])):
        return "dilations"
    if op_type == "Cast" and attrs.get("saturate", 1) != 1:
        return "saturate"
    return None
