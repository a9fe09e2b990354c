"""The models scenario's compute-heavy model: a deep MLP written as an ONNX graph.

A wide scikit-learn MLP exported with skl2onnx costs too little per row here to serve the
purpose: one row is a matrix-vector product per layer, bound by memory, so 3 hidden layers
of 2048 (34 MB of weights) cost 0.84 ms, and 20 ms would take ~800 MB of weights. So the
bench writes the graph itself with `onnx.helper`: 32 float inputs (one tensor named `input`,
shape [None, 32]) -> Dense(W) -> `depth` x [MatMul by one shared W x W matrix + bias, Tanh]
-> Dense(1). The weights (4 MB at W = 1024) stay in cache, so one row is compute-bound,
and a batch of rows turns each layer into a matrix-matrix product, which is what batching
can win. `depth` is calibrated on this machine so that one row costs >= 20 ms on one thread.
`model.toml` declares the features `f0..f31` (float, 0..1).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

N_FEATURES = 32
WIDTH = 1024
MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 5
ROW_MS_AT_LEAST = 20.0


def build(folder: Path, depth: int, *, width: int = WIDTH, name: str = "heavy") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def weight(name: str, rows: int, cols: int) -> onnx.TensorProto:
        values = rng.normal(0.0, 1.0 / np.sqrt(rows), (rows, cols)).astype(np.float32)
        return numpy_helper.from_array(values, name)

    bias = numpy_helper.from_array(np.full(width, 0.1, dtype=np.float32), "b")
    inits = [weight("w_in", N_FEATURES, width), weight("w", width, width), bias]
    inits.append(weight("w_out", width, 1))
    nodes = [
        helper.make_node("MatMul", ["input", "w_in"], ["h0_mm"]),
        helper.make_node("Add", ["h0_mm", "b"], ["h0_b"]),
        helper.make_node("Tanh", ["h0_b"], ["h0"]),
    ]
    for i in range(1, depth + 1):
        nodes += [
            helper.make_node("MatMul", [f"h{i - 1}", "w"], [f"h{i}_mm"]),
            helper.make_node("Add", [f"h{i}_mm", "b"], [f"h{i}_b"]),
            helper.make_node("Tanh", [f"h{i}_b"], [f"h{i}"]),
        ]
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "w_out"], ["variable"]))
    graph = helper.make_graph(
        nodes,
        "bench_heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    features = "\n".join(
        f'[[features]]\nname = "f{i}"\ntype = "float"\nmin = 0\nmax = 1\n'
        for i in range(N_FEATURES)
    )
    (folder / "model.toml").write_text(
        f"# Built by bench/heavy_model.py: {depth} tanh layers of {width} (shared weights).\n"
        f'name = "{name}"\nversion = "bench-{width}x{depth}"\nformat = "onnx"\n'
        f'artifact = "model.onnx"\nqueue = "models"\nmax_rows = 100\ntimeout_s = 60\n\n'
        f"[batch]\nmax_batch_size = {MAX_BATCH_SIZE}\nmax_wait_ms = {MAX_WAIT_MS}\n\n"
        f"[outputs]\nprobabilities = false\n\n{features}"
    )
    return folder


def calibrated(folder: Path) -> tuple[Path, int, float]:
    """Build with a depth such that one row costs >= 20 ms on one thread (about 25 ms)."""
    depth = 50
    build(folder, depth)
    per_layer = row_ms(folder / "model.onnx") / depth
    for _ in range(3):
        depth = max(depth, int(ROW_MS_AT_LEAST * 1.25 / per_layer) + 1)
        build(folder, depth)
        one = row_ms(folder / "model.onnx")
        if one >= ROW_MS_AT_LEAST:
            return folder, depth, round(one, 2)
        per_layer = one / depth
    return folder, depth, round(one, 2)


def session(path: Path, threads: int = 1):  # type: ignore[no-untyped-def]  # onnxruntime
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def row_ms(path: Path, *, rows: int = 1, repeats: int = 7) -> float:
    """Median ms of one call on `rows` rows, one onnxruntime thread, after a warm call."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(1).random((rows, N_FEATURES), dtype=np.float32)
    sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - began) * 1000)
    return sorted(times)[len(times) // 2]
