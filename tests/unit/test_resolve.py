"""--model resolution: demo, fetched MLPerf models, a path; clear errors when files are missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import DatasetError, ModelError, OrchError
from orchestrator.models import demo
from orchestrator.models.resolve import ModelChoice, resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fake fetch cache: artifact_path(name) -> tmp/<name>/file; returns a helper to create files."""
    import orchestrator.fetch

    root = tmp_path / "cache"
    monkeypatch.setattr(orchestrator.fetch, "artifact_path", lambda name, cache_dir=None, **_: root / name / "file")

    def put(*names):
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "file").write_text("x")
        return root

    return put


@pytest.fixture
def fake_demo(tmp_path, monkeypatch):
    """The demo files without building the 90 MB model (built and tested in the integration tier)."""
    model = tmp_path / "demo.onnx"
    model.write_bytes(b"onnx")
    dataset = tmp_path / "demo_squad.json"
    dataset.write_text("{}")
    monkeypatch.setattr(demo, "demo_model_path", lambda cache_dir=None: model)
    monkeypatch.setattr(demo, "demo_dataset_path", lambda: dataset)
    return model, dataset


def test_demo(fake_demo):
    model, dataset = fake_demo
    choice = resolve_model("demo")
    assert choice == ModelChoice("demo", model, demo.demo_vocab_path(), dataset, True)
    assert choice.vocab_path.name == "vocab.txt" and choice.vocab_path.is_absolute()


def test_demo_with_own_dataset_and_vocab(fake_demo, tmp_path):
    data = tmp_path / "mine.json"
    data.write_text("{}")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n")
    choice = resolve_model("demo", dataset=data, vocab=vocab)
    assert choice.dataset_path == data.resolve() and choice.vocab_path == vocab.resolve() and choice.is_demo


def test_demo_dataset_missing(fake_demo):
    fake_demo[1].unlink()
    with pytest.raises(DatasetError, match="demo data set .*demo_squad.json is missing"):
        resolve_model("demo")


def test_demo_dataset_path_is_in_the_package():
    import orchestrator

    assert demo.demo_dataset_path() == Path(orchestrator.__file__).resolve().parent / "data" / "demo_squad.json"


@pytest.mark.parametrize("name", ["bert-large", "bert-large-int8"])
def test_fetched_model(cache, name):
    root = cache(name, "vocab", "squad-dev")
    choice = resolve_model(name)
    assert choice == ModelChoice(name, root / name / "file", root / "vocab" / "file", root / "squad-dev" / "file", False)


@pytest.mark.parametrize("name", ["bert-large", "bert-large-int8"])
def test_fetched_model_missing_says_fetch(cache, name):
    cache("vocab", "squad-dev")
    with pytest.raises(ModelError, match=rf"run: orch fetch {name}$"):
        resolve_model(name)


def test_fetched_vocab_missing_says_fetch(cache):
    cache("bert-large", "squad-dev")
    with pytest.raises(DatasetError, match=r"vocab.*run: orch fetch vocab$"):
        resolve_model("bert-large")


def test_path_with_given_vocab_and_dataset(tmp_path, cache):
    cache()  # nothing fetched: the given files must be used
    model = _interface_model(tmp_path / "m.onnx")
    vocab, data = tmp_path / "v.txt", tmp_path / "d.json"
    vocab.write_text("v")
    data.write_text("{}")
    choice = resolve_model(str(model), vocab=vocab, dataset=data)
    assert choice == ModelChoice("m", model.resolve(), vocab.resolve(), data.resolve(), False)


def test_path_defaults_to_fetched_vocab_and_dataset(tmp_path, cache):
    root = cache("vocab", "squad-dev")
    model = _interface_model(tmp_path / "m.onnx")
    choice = resolve_model(str(model))
    assert choice.vocab_path == root / "vocab" / "file" and choice.dataset_path == root / "squad-dev" / "file"


def test_path_without_fetched_dataset(tmp_path, cache):
    cache("vocab")
    model = _interface_model(tmp_path / "m.onnx")
    with pytest.raises(DatasetError, match="orch fetch squad-dev"):
        resolve_model(str(model))


@pytest.mark.parametrize(
    "spec, message",
    [("nothere.onnx", "no such file, and not one of demo, bert-large, bert-large-int8"), ("bert-larg", "no such file")],
)
def test_unknown_spec(spec, message, cache):
    with pytest.raises(ModelError, match=message):
        resolve_model(spec)


def test_not_onnx(tmp_path, cache):
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"model\.pt is not an \.onnx file"):
        resolve_model(str(path))


def test_given_vocab_missing(tmp_path, fake_demo):
    with pytest.raises(DatasetError, match=r"--vocab .*nope\.txt does not exist"):
        resolve_model("demo", vocab=tmp_path / "nope.txt")


def test_errors_are_one_line(cache):
    with pytest.raises(OrchError) as info:
        resolve_model("bert-large")
    assert "\n" not in str(info.value)


def _interface_model(path, graph_name="g"):
    """A tiny ONNX file with the MLPerf BERT interface (int64 inputs, two float outputs)."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "input_mask", "segment_ids")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s"]) for n in ("start", "end")]
    nodes = [helper.make_node("Cast", ["input_mask"], ["start"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["segment_ids"], ["end"], to=TensorProto.FLOAT)]
    onnx.save(helper.make_model(helper.make_graph(nodes, graph_name, inputs, outputs)), str(path))
    return path


def test_the_demo_model_given_by_its_path_gets_the_demo_vocab_and_data_set(tmp_path, cache, fake_demo):
    cache()  # nothing fetched: before, this asked for `orch fetch vocab`
    model = _interface_model(tmp_path / "demo-minilm-l6-qa-0123.onnx", graph_name=demo.GRAPH_NAME)
    choice = resolve_model(str(model))
    assert choice == ModelChoice("demo-minilm-l6-qa-0123", model.resolve(), demo.demo_vocab_path(), fake_demo[1], True)
    # Given files still win.
    vocab = tmp_path / "v.txt"
    vocab.write_text("v")
    assert resolve_model(str(model), vocab=vocab).vocab_path == vocab.resolve()
    # Any other graph is not the demo model: it needs the fetched vocab.
    other = _interface_model(tmp_path / "other.onnx")
    with pytest.raises(DatasetError, match="orch fetch vocab"):
        resolve_model(str(other))


def test_a_text_file_named_model_onnx_is_refused_for_what_it_is_before_the_vocab(tmp_path, cache):
    model = tmp_path / "model.onnx"
    model.write_text("not a model at all\n")
    with pytest.raises(ModelError, match=r"model\.onnx is not an ONNX model"):
        resolve_model(str(model))  # no vocab fetched either: the model is named first


def test_an_onnx_file_without_the_interface_is_refused(tmp_path, cache):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])),
              str(tmp_path / "other.onnx"))
    with pytest.raises(ModelError, match="lacks the input\\(s\\) input_ids, input_mask, segment_ids"):
        resolve_model(str(tmp_path / "other.onnx"))
