"""The MLPerf BERT ONNX interface, checked on the file before anything runs it.

Inputs ``input_ids``, ``input_mask``, ``segment_ids``: int64 [batch, seq];
at least two float outputs (start and end logits). The backends check the
same interface again on the loaded session (``backends.onnxruntime.check_interface``);
this check reads the file alone, so ``orch bench`` refuses a wrong file
before Ray starts or a worker loads it.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import ModelError

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
_INT64 = 7  # onnx.TensorProto.INT64
_FLOATS = (1, 10, 16)  # FLOAT, FLOAT16, BFLOAT16


def check_model_file(path: Path, *, flag: str = "--model") -> str | None:
    """Refuse a file that is not an ONNX model with the MLPerf BERT interface.

    Returns:
        The model's graph name (None when onnx is not installed here: the nodes check the file).

    Raises:
        ModelError: not loadable as ONNX, or inputs/outputs do not match.
    """
    try:
        import onnx
    except ImportError:  # the controller without orch[bench]: the nodes check it
        return None
    path = Path(path)
    hint = "give an ONNX file with the MLPerf BERT interface: int64 input_ids, input_mask, segment_ids [batch, seq]"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{flag} {path} is not an ONNX model ({type(exc).__name__})", hint=hint) from exc
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise ModelError(f"{flag} {path} lacks the input(s) {', '.join(missing)} (it has: {', '.join(inputs) or 'none'})",
                         hint=hint)
    for name in INPUT_NAMES:
        tensor = inputs[name].type.tensor_type
        if tensor.elem_type != _INT64 or len(tensor.shape.dim) != 2:
            raise ModelError(f"{flag} {path} input {name} is not int64 of rank 2", hint=hint)
    floats = [o for o in graph.output if o.type.tensor_type.elem_type in _FLOATS]
    if len(floats) < 2:
        raise ModelError(f"{flag} {path} has {len(floats)} float output(s); the MLPerf BERT interface needs start and end logits",
                         hint=hint)
    return graph.name
