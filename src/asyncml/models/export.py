"""The bundled example: scikit-learn's iris data, a small classifier, exported to ONNX.

Run by ``asyncml models example --out DIR``; it needs the dev dependencies skl2onnx and
onnx, while serving the result needs only onnxruntime. ZipMap is turned off so the
probabilities come out as one plain tensor, not a list of dicts.
"""

from __future__ import annotations

from pathlib import Path

from asyncml.models.errors import ModelError

VERSION = "1.0.0"
FEATURES = (
    ("sepal_length", "Sepal length, cm"),
    ("sepal_width", "Sepal width, cm"),
    ("petal_length", "Petal length, cm"),
    ("petal_width", "Petal width, cm"),
)


def _manifest(classes: list[str]) -> str:
    features = "".join(
        f'\n[[features]]\nname = "{name}"\ntype = "float"\nmin = 0\nmax = 30\n'
        f'description = "{text}"\n'
        for name, text in FEATURES
    )
    labels = ", ".join(f'"{c}"' for c in classes)
    return f"""\
# Made by `asyncml models example --out DIR`: scikit-learn's iris data, a standardised
# logistic regression, exported with skl2onnx (zipmap off).
name = "iris"
version = "{VERSION}"
format = "onnx"
artifact = "model.onnx"
description = "Iris species from sepal and petal sizes (example model)."
queue = "models"
max_rows = 100
timeout_s = 30

[batch]
max_batch_size = 32
max_wait_ms = 5

[outputs]
predictions = "label"
probabilities = "probabilities"
classes = [{labels}]
{features}"""


def export_iris(out: Path) -> Path:
    """Train on scikit-learn's bundled iris data and write ``out/iris/{model.toml,model.onnx}``."""
    try:
        import numpy as np
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise ModelError(
            f"exporting needs scikit-learn and skl2onnx (uv sync --group dev): {exc}"
        ) from exc

    data = load_iris()
    x = data.data.astype(np.float32)
    y = np.asarray(data.target_names)[data.target]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    clf.fit(x, y)
    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )
    folder = out / "iris"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    (folder / "model.toml").write_text(_manifest([str(c) for c in clf.classes_]))
    return folder
