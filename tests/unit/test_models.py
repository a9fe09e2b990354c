"""Model folders: manifests, generated inputs, safe loading, discovery, the CLI."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import skops.io as sio
from pydantic import BaseModel, ValidationError
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from asyncml.cli import app
from asyncml.kinds import TaskContext
from asyncml.models import (
    BUNDLED_DIR,
    Manifest,
    ModelInvalid,
    ModelRefused,
    ModelSpec,
    discover,
    load_model,
    read_manifest,
)
from asyncml.models.inputs import input_model, rows
from asyncml.models.loaders import ModelCache
from asyncml.registry import build_registry
from asyncml.settings import Settings

IRIS = BUNDLED_DIR / "iris"
FLOWERS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
]


def manifest(**overrides: Any) -> Manifest:
    data: dict[str, Any] = {
        "name": "toy",
        "version": "1",
        "format": "onnx",
        "features": [
            {"name": "size", "type": "float", "min": 0, "max": 10},
            {"name": "count", "type": "int", "min": 1},
            {"name": "active", "type": "bool"},
            {"name": "colour", "type": "string", "enum": ["red", "blue"]},
            {"name": "note", "type": "string", "max_length": 5},
        ],
        **overrides,
    }
    return Manifest.model_validate(data)


ROW = {"size": 2.5, "count": 3, "active": True, "colour": "red", "note": "hi"}


def toy_input(**body: Any) -> BaseModel:
    return input_model(manifest(max_rows=2)).model_validate(body)


def write_folder(root: Path, name: str, toml: str, files: dict[str, bytes] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(toml)
    for file_name, content in (files or {}).items():
        (folder / file_name).write_bytes(content)
    return folder


def sklearn_toml(name: str, fmt: str, artifact: str, extra: str = "") -> str:
    features = "".join(
        f'\n[[features]]\nname = "{f}"\ntype = "float"\n' for f in ("a", "b", "c", "d")
    )
    return (
        f'name = "{name}"\nversion = "7"\nformat = "{fmt}"\nartifact = "{artifact}"\n'
        f"{extra}\n{features}"
    )


def iris_estimator() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(x, y)


class Doubler(BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """A type skops does not trust by default: stands for any custom class in a file."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def predict(self, x: Any) -> Any:
        return np.asarray(x, dtype=float)[:, 0] * 2


# --- manifests ---------------------------------------------------------------------


def test_bundled_iris_manifest_names_four_bounded_float_features() -> None:
    parsed = read_manifest(IRIS)
    assert parsed.kind_name == "model.iris"
    assert parsed.queue == "models"
    assert [(f.name, f.type, f.min, f.max) for f in parsed.features] == [
        (name, "float", 0, 30)
        for name in ("sepal_length", "sepal_width", "petal_length", "petal_width")
    ]
    assert parsed.batch.max_batch_size == 32 and parsed.batch.max_wait_ms == 5


def test_manifest_defaults_queue_rows_and_artifact_by_format() -> None:
    parsed = manifest(format="skops")
    assert (parsed.queue, parsed.max_rows, parsed.artifact_name) == ("models", 100, "model.skops")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"features": [{"name": "a", "type": "string", "min": 1}]}, "min/max apply"),
        ({"features": [{"name": "a", "type": "float", "enum": ["x"]}]}, "enum applies"),
        ({"features": [{"name": "a", "type": "float", "min": 2, "max": 1}]}, "min is above max"),
        ({"features": [{"name": "instances", "type": "float"}]}, "reserved"),
        ({"features": [{"name": "a", "type": "float"}] * 2}, "named twice"),
        ({"features": []}, "at least 1"),
        ({"artifact": "model.pkl"}, "pickle file"),
        ({"artifact": "../elsewhere.onnx"}, "inside the folder"),
        ({"trusted": ["x.Y"]}, "skops models only"),
        ({"name": "Iris!"}, "pattern"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_manifest_refuses_what_cannot_be_served(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        manifest(**overrides)


def test_missing_or_broken_manifest_is_a_model_invalid_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelInvalid, match=r"no model\.toml"):
        read_manifest(tmp_path)
    (tmp_path / "model.toml").write_text("name = ")
    with pytest.raises(ModelInvalid, match=r"model\.toml: not readable TOML"):
        read_manifest(tmp_path)


# --- generated inputs -------------------------------------------------------------------


def test_one_row_as_fields_gives_one_row_in_feature_order() -> None:
    assert rows(manifest(), toy_input(**ROW)) == [[2.5, 3, True, "red", "hi"]]


def test_instances_give_one_row_each() -> None:
    other = {**ROW, "size": 0, "active": False}
    assert rows(manifest(), toy_input(instances=[ROW, other])) == [
        [2.5, 3, True, "red", "hi"],
        [0.0, 3, False, "red", "hi"],
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "2.5"),  # float: a string is not a number
        ("size", True),  # float: a bool is not a number
        ("size", math.nan),
        ("size", -0.1),  # below min
        ("size", 10.01),  # above max
        ("count", 1.5),  # int: no fractions
        ("count", "3"),
        ("count", 0),  # below min
        ("active", 1),  # bool: no numbers
        ("active", "true"),
        ("colour", "green"),  # categorical: only the listed values
        ("note", "longer"),  # max_length
        ("note", 5),
    ],
)
def test_wrong_type_or_out_of_bounds_value_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        toy_input(**{**ROW, field: value})
    assert caught.value.errors()[0]["loc"][0] == field


def test_bounds_are_inclusive_and_a_float_takes_an_int() -> None:
    assert rows(manifest(), toy_input(**{**ROW, "size": 10, "count": 1}))[0][:2] == [10, 1]


def test_missing_features_are_named() -> None:
    with pytest.raises(ValidationError, match="missing features: colour, note"):
        toy_input(size=1.0, count=1, active=True)


def test_unknown_field_is_refused_in_a_row_and_in_instances() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        toy_input(**ROW, colour_name="red")
    with pytest.raises(ValidationError, match="Extra inputs"):
        toy_input(instances=[{**ROW, "extra": 1}])


def test_features_and_instances_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        toy_input(size=1.0, instances=[ROW])


def test_instances_hold_one_to_max_rows_rows() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        toy_input(instances=[])
    with pytest.raises(ValidationError, match="at most 2"):
        toy_input(instances=[ROW] * 3)


def test_generated_schema_documents_types_bounds_and_categories() -> None:
    schema = input_model(manifest()).model_json_schema()
    row = schema["$defs"]["ModelToyRow"]
    assert (
        row["properties"]["size"] | {"type": "number", "minimum": 0, "maximum": 10}
        == (row["properties"]["size"])
    )
    assert row["properties"]["colour"]["enum"] == ["red", "blue"]
    assert row["properties"]["active"]["type"] == "boolean"
    assert set(row["required"]) == {"size", "count", "active", "colour", "note"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["instances"]["anyOf"][0]["maxItems"] == 100


# --- safe loading -------------------------------------------------------------------


def test_pickle_is_refused_unless_its_folder_is_trusted(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "legacy", sklearn_toml("legacy", "pickle", "model.pkl"))
    joblib.dump(iris_estimator(), folder / "model.pkl")
    spec = ModelSpec(folder=folder, manifest=read_manifest(folder))
    with pytest.raises(ModelRefused, match="unpickling runs any code"):
        load_model(spec)
    trusted = ModelSpec(folder=folder, manifest=read_manifest(folder), trust_pickle=True)
    assert load_model(trusted).predict([[5.1, 3.5, 1.4, 0.2]]).predictions == [0]


def test_pickle_dirs_setting_trusts_folders_below_it(tmp_path: Path) -> None:
    models = tmp_path / "models"
    folder = write_folder(models, "legacy", sklearn_toml("legacy", "pickle", "model.pkl"))
    joblib.dump(iris_estimator(), folder / "model.pkl")
    refused = discover(Settings(_env_file=None, models_dir=models, models_bundled=False))
    assert "unpickling" in refused.problems[0].message and not refused.specs
    trusted = Settings(
        _env_file=None, models_dir=models, models_bundled=False, models_trust_pickle_dirs=[models]
    )
    assert [s.manifest.name for s in discover(trusted).specs] == ["legacy"]


def test_skops_file_with_an_untrusted_type_is_refused_naming_the_type(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "custom", sklearn_toml("custom", "skops", "model.skops"))
    sio.dump(Doubler(), folder / "model.skops")
    type_name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(ModelRefused, match=f"untrusted types {type_name}"):
        load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))


def test_skops_type_listed_as_trusted_in_the_manifest_loads(tmp_path: Path) -> None:
    type_name = f"{Doubler.__module__}.Doubler"
    toml = sklearn_toml("custom", "skops", "model.skops", extra=f'trusted = ["{type_name}"]')
    folder = write_folder(tmp_path, "custom", toml)
    sio.dump(Doubler(), folder / "model.skops")
    model = load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))
    out = model.predict([[1.5, 0, 0, 0], [4.0, 0, 0, 0]])
    assert (out.predictions, out.probabilities) == ([3.0, 8.0], None)


def test_skops_model_predicts_what_the_estimator_predicts(tmp_path: Path) -> None:
    estimator = iris_estimator()
    folder = write_folder(tmp_path, "lr", sklearn_toml("lr", "skops", "model.skops"))
    sio.dump(estimator, folder / "model.skops")
    table = [list(f.values()) for f in FLOWERS]
    out = load_model(ModelSpec(folder=folder, manifest=read_manifest(folder))).predict(table)
    assert out.predictions == estimator.predict(np.array(table)).tolist()
    assert out.probabilities == estimator.predict_proba(np.array(table)).tolist()


def test_onnx_classifier_with_zipmap_is_refused_saying_how_to_export(tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    onx = to_onnx(iris_estimator(), np.zeros((1, 4), dtype=np.float32), target_opset=17)
    folder = write_folder(
        tmp_path,
        "zm",
        sklearn_toml("zm", "onnx", "model.onnx"),
        {"model.onnx": onx.SerializeToString()},
    )
    with pytest.raises(ModelInvalid, match="zipmap"):
        load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))


def test_onnx_model_with_another_feature_count_is_refused(tmp_path: Path) -> None:
    toml = (IRIS / "model.toml").read_text().replace('name = "petal_width"', 'name = "extra"')
    toml += '\n[[features]]\nname = "petal_width"\ntype = "float"\n'
    folder = write_folder(
        tmp_path, "iris5", toml, {"model.onnx": (IRIS / "model.onnx").read_bytes()}
    )
    with pytest.raises(ModelInvalid, match=r"\[rows, 5\] is needed"):
        load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))


def test_predictions_equal_onnxruntime_called_directly(settings: Settings) -> None:
    kind = build_registry(settings).get("model.iris")
    x, _ = load_iris(return_X_y=True)
    table = x[::7].astype(np.float32)
    body = {"instances": [dict(zip(FLOWERS[0], map(float, r), strict=True)) for r in table]}
    session = ort.InferenceSession(str(IRIS / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"input": table})
    result = kind.run(body, TaskContext(settings))
    assert result == {
        "model": "iris",
        "version": "1.0.0",
        "predictions": labels.tolist(),
        "probabilities": probabilities.tolist(),
        "batch_size": len(table),
    }
    assert set(result["predictions"]) == {"setosa", "versicolor", "virginica"}


def test_one_row_result_has_batch_size_one(settings: Settings) -> None:
    result = build_registry(settings).get("model.iris").run(FLOWERS[0], TaskContext(settings))
    assert (result["predictions"], result["batch_size"]) == (["setosa"], 1)
    assert len(result["probabilities"][0]) == 3


def test_a_model_is_loaded_once_per_process() -> None:
    cache = ModelCache()
    spec = ModelSpec(folder=IRIS, manifest=read_manifest(IRIS))
    assert cache.get(spec) is cache.get(spec)
    assert spec in cache


def test_a_process_other_than_the_one_that_loaded_a_model_loads_its_own() -> None:
    cache = ModelCache()
    spec = ModelSpec(folder=IRIS, manifest=read_manifest(IRIS))
    parents = cache.get(spec)
    cache._pid = -1  # as if this cache had been filled by the parent before a fork
    assert spec not in cache
    assert cache.get(spec) is not parents


# --- discovery ------------------------------------------------------------------------


def test_broken_folders_are_skipped_with_a_clear_message_and_others_still_served(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    root = settings.models_path()
    write_folder(root, "bad_toml", "name = [")
    write_folder(root, "no_artifact", sklearn_toml("gone", "onnx", "model.onnx"))
    write_folder(root, "garbage", sklearn_toml("junk", "onnx", "model.onnx"), {"model.onnx": b"no"})
    with caplog.at_level(logging.WARNING, logger="asyncml.models"):
        registry = build_registry(settings)
    assert "model.iris" in registry and "audio.length" in registry
    assert not {"model.gone", "model.junk"} & {k.name for k in registry}
    problems = {p.folder.name: p.message for p in discover(settings).problems}
    assert "not readable TOML" in problems["bad_toml"]
    assert "artifact file is missing" in problems["no_artifact"]
    assert "onnxruntime cannot load it" in problems["garbage"]
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 3


def test_a_folder_model_named_like_an_example_replaces_it(settings: Settings) -> None:
    folder = settings.models_path() / "iris"
    shutil.copytree(IRIS, folder)
    toml = folder / "model.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', 'version = "2.0.0"'))
    found = discover(settings)
    assert [(s.manifest.name, s.manifest.version) for s in found.specs] == [("iris", "2.0.0")]
    assert found.problems == []


def test_two_folders_with_one_model_name_serve_the_first(settings: Settings) -> None:
    for name in ("a_iris", "b_iris"):
        shutil.copytree(IRIS, settings.models_path() / name)
    found = discover(settings)
    assert [s.folder.name for s in found.specs] == ["a_iris"]
    assert "already served from" in found.problems[0].message


def test_bundled_examples_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, models_bundled=False)
    assert [k.name for k in build_registry(settings)] == ["audio.length", "euro.results"]


# --- CLI --------------------------------------------------------------------------------

runner = CliRunner()


def test_models_check_prints_each_problem_and_exits_non_zero(tmp_path: Path) -> None:
    write_folder(tmp_path, "broken", "name = [")
    env = {"ASYNCML_MODELS_DIR": str(tmp_path), "ASYNCML_DATA_DIR": str(tmp_path / "data")}
    result = runner.invoke(app, ["models", "check"], env=env)
    assert result.exit_code == 1
    assert "FAIL" in result.output and "broken" in result.output
    assert "model.iris" in result.output  # the good ones are listed too


def test_models_check_of_good_folders_exits_zero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "check"], env={"ASYNCML_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output


def test_models_list_shows_name_version_format_queue_and_features(tmp_path: Path) -> None:
    env = {"ASYNCML_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["models", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (iris,) = json.loads(result.output)
    assert (iris["name"], iris["version"], iris["format"], iris["queue"]) == (
        "iris",
        "1.0.0",
        "onnx",
        "models",
    )
    assert [f["name"] for f in iris["features"]][:2] == ["sepal_length", "sepal_width"]


def test_models_example_exports_a_model_that_serves_like_the_bundled_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "example", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "iris") == read_manifest(IRIS)
    table = [list(f.values()) for f in FLOWERS]
    exported = load_model(ModelSpec(folder=tmp_path / "iris", manifest=read_manifest(IRIS)))
    bundled = load_model(ModelSpec(folder=IRIS, manifest=read_manifest(IRIS)))
    assert exported.predict(table) == bundled.predict(table)


def test_predict_with_input_that_is_not_json_is_a_usage_error() -> None:
    result = runner.invoke(app, ["predict", "iris", "--input", "{sepal_length: 5}"])
    assert result.exit_code == 2
    assert "not JSON" in result.output


def test_predict_on_an_unreachable_service_exits_3() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing listens
    row = json.dumps(FLOWERS[0])
    result = runner.invoke(app, ["predict", "iris", "--input", row, "--url", url, "--json"])
    assert result.exit_code == 3
    assert json.loads(result.output)["type"] == "service_unavailable"


def test_onnx_model_with_one_input_per_feature_gets_each_column_in_its_type(
    tmp_path: Path,
) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["size", "count_f"], ["total"]),
        ],
        "sum",
        [
            helper.make_tensor_value_info("size", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("count", TensorProto.INT64, [None, 1]),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [None, 1])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    toml = (
        'name = "adder"\nversion = "1"\nformat = "onnx"\n'
        '[[features]]\nname = "count"\ntype = "int"\n'
        '[[features]]\nname = "size"\ntype = "float"\n'
    )
    folder = write_folder(tmp_path, "adder", toml, {"model.onnx": onx.SerializeToString()})
    model = load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))
    out = model.predict([[2, 0.5], [40, 1.25]])
    assert (out.predictions, out.probabilities) == ([2.5, 41.25], None)


def test_skops_pipeline_with_a_categorical_feature_gets_an_object_array(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = np.array([["red", 1.0], ["blue", 2.0], ["red", 3.0], ["blue", 4.0]], dtype=object)
    pipeline = make_pipeline(
        ColumnTransformer([("colour", OneHotEncoder(), [0])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(x, [1, 0, 1, 0])
    toml = (
        'name = "paint"\nversion = "1"\nformat = "skops"\n'
        '[[features]]\nname = "colour"\ntype = "string"\nenum = ["red", "blue"]\n'
        '[[features]]\nname = "size"\ntype = "float"\n'
    )
    folder = write_folder(tmp_path, "paint", toml)
    sio.dump(pipeline, folder / "model.skops")
    model = load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))
    table = [["red", 2.5], ["blue", 2.5]]
    assert (
        model.predict(table).predictions == pipeline.predict(np.array(table, dtype=object)).tolist()
    )
