"""The ONNX export of a trained checkpoint, its check on onnxruntime, and verify/embed on the exported model."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import call_cli, write_f25_root
from onnx import helper, numpy_helper

from helpers.data.augment import normalize
from helpers.data.images import load_image
from helpers.eval import onnx_export
from helpers.eval.inference import load_trained
from helpers.model import resnet

ONE_SENTENCE = re.compile(r"^error: [^\n]+\n$")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The trained tiny checkpoint's best.pt, exported once for the tests that use the model."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx_export.export_checkpoint(trained_run / "best.pt", out)
    return out


def val_images(root, count: int):
    names = sorted({name for line in (root / "val_pairs.txt").read_text().splitlines() for name in line.split()[:2]})
    return [root / "ver_data" / name for name in names[:count]]


def left_over(folder):
    return sorted(p.name for p in folder.iterdir())


def test_export_writes_the_embedder_as_pytorch_computes_it(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, printed, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out, "--json")
    assert code == 0, err
    report = json.loads(printed)
    state = torch.load(trained_run / "best.pt", weights_only=True)
    # The export's own check: every image's two embeddings agree, and the val EER is the one training recorded.
    assert report["lowest_cosine"] >= 0.9999 and report["images_compared"] == len(val_images(demo_root, 10**6))
    assert round(report["onnx_eer"], 4) == round(report["torch_eer"], 4)
    trained_in_fp32 = state["fast_path"]["amp"] == "none"  # the export compares in fp32, as its graph computes
    assert report["torch_eer"] == pytest.approx(state["best_eer"], abs=1e-6 if trained_in_fp32 else 0.005)
    assert report["exporter"] == "torch.onnx.export (dynamo)" and report["size_bytes"] == out.stat().st_size

    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata["classes"]) == state["classes"]
    assert float(metadata["val_threshold"]) == state["val"]["val_threshold"] and metadata["threshold_tta"] == "false"
    training = json.loads(metadata["training"])
    assert training["model"]["depth"] == 18 and training["data"]["image_size"] == 32
    assert "pixel / 127.5 - 1" in metadata["normalisation"]
    assert proto.producer_name == "pytorch" and proto.producer_version == torch.__version__
    assert int(metadata["opset"]) == report["opset"] == next(o.version for o in proto.opset_import if o.domain == "")
    (images,), (embeddings,) = proto.graph.input, proto.graph.output
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim][1:] == [3, 32, 32]
    assert images.type.tensor_type.shape.dim[0].dim_param and embeddings.type.tensor_type.shape.dim[1].dim_value == 512
    head_shape = tuple(state["model"]["head.weight"].shape)
    assert all(tuple(tensor.dims) != head_shape for tensor in proto.graph.initializer)  # no margin head


def test_a_run_that_evaluated_under_bf16_exports_against_its_fp32_model(trained_run, tmp_path):
    """The timed probe takes bf16 where the CPU has bf16 kernels; the fp32 graph is checked against fp32 PyTorch."""
    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["fast_path"] = {**state["fast_path"], "amp": "bf16"}
    torch.save(state, tmp_path / "bf16.pt")
    model = load_trained(tmp_path / "bf16.pt", device="cpu").model
    report = onnx_export.export_checkpoint(tmp_path / "bf16.pt", tmp_path / "model.onnx")
    assert report.lowest_cosine >= 0.9999 and round(report.onnx_eer, 4) == round(report.torch_eer, 4)


def test_the_exported_file_runs_on_onnxruntime_with_any_batch_size(exported, trained_run, demo_root):
    """An oracle apart from the export's own check: raw onnxruntime on raw pixels, against FaceModel.embed."""
    model = load_trained(trained_run / "best.pt", device="cpu").model
    pixels = torch.stack([load_image(path, 32) for path in val_images(demo_root, 7)])
    with torch.no_grad():
        expected = model.embed(normalize(pixels)).numpy()
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    whole = session.run(None, {"images": pixels.numpy()})[0]
    one = session.run(None, {"images": pixels[:1].numpy()})[0]
    assert whole.shape == (7, 512) and np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(whole * expected, axis=1)) >= 0.9999
    assert np.allclose(one[0], whole[0], atol=1e-5)


def _perturbed(proto):
    """The graph with its largest weight matrix replaced by noise."""
    largest = max((t for t in proto.graph.initializer if len(t.dims) == 2), key=lambda t: np.prod(t.dims))
    noise = np.random.default_rng(0).standard_normal(tuple(largest.dims)).astype(np.float32)
    largest.CopyFrom(numpy_helper.from_array(noise, largest.name))
    return proto


def _doubled(proto):
    """The graph with its output multiplied by two after the normalisation."""
    final = proto.graph.output[0].name
    last = next(node for node in proto.graph.node if final in node.output)
    last.output[list(last.output).index(final)] = "unit"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    proto.graph.node.append(helper.make_node("Mul", ["unit", "two"], [final]))
    return proto


@pytest.mark.parametrize("tamper,message", [
    (_perturbed, r"the exported model disagrees with PyTorch: the largest difference is at \S+ver_data/\S+\.jpg, "
                 r"whose two embeddings have cosine -?0\.\d{6}, below 0\.9999"),
    (_doubled, r"the exported model's embeddings are not unit vectors: the one of \S+\.jpg has norm 2\.0000\d\d"),
])
def test_a_tampered_graph_is_refused_in_one_sentence_and_nothing_is_written(trained_run, tmp_path, monkeypatch,
                                                                            capsys, tamper, message):
    original = onnx_export.export_graph
    monkeypatch.setattr(onnx_export, "export_graph",
                        lambda module, size: (tamper(original(module, size)[0]), "tampered"))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out)
    assert code == 1 and ONE_SENTENCE.match(err), err
    assert re.match(f"^error: {message}; nothing was written to {re.escape(str(out))}$", err.strip()), err
    assert out.read_bytes() == b"an earlier export" and left_over(tmp_path) == ["model.onnx"]


def test_a_val_eer_that_differs_in_the_fourth_decimal_is_refused(trained_run, tmp_path, monkeypatch, capsys):
    """Embeddings can agree to 0.9999 and still move a pair across the EER point; the EER itself is compared."""
    original, calls = onnx_export.compute_eer, []

    def onnx_side_shifted(scores, labels):
        eer, threshold = original(scores, labels)
        calls.append(eer)
        return eer + (0.0002 if len(calls) == 2 else 0.0), threshold  # the second call scores the ONNX embeddings

    monkeypatch.setattr(onnx_export, "compute_eer", onnx_side_shifted)
    out = tmp_path / "model.onnx"
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out)
    assert code == 1 and ONE_SENTENCE.match(err), err
    assert err == (f"error: the exported model's val EER is {calls[0] + 0.0002:.6f} on onnxruntime against "
                   f"{calls[0]:.6f} in PyTorch, not equal to 4 decimals; nothing was written to {out}\n")
    assert left_over(tmp_path) == []


def test_a_graph_of_another_input_size_is_refused(trained_run, tmp_path, monkeypatch, capsys):
    original = onnx_export.export_graph
    monkeypatch.setattr(onnx_export, "export_graph", lambda module, size: original(module, size + 16))
    out = tmp_path / "model.onnx"
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out)
    assert code == 1 and ONE_SENTENCE.match(err), err
    assert (f"error: {out} takes images tensor(uint8) batchx3x48x48, not uint8 images of 3x32x32 in batches of any "
            f"size, as its metadata says; nothing was written to {out}") in err
    assert left_over(tmp_path) == []


def test_the_torchscript_exporter_takes_over_when_dynamo_fails_and_says_so(trained_run, tmp_path, monkeypatch):
    original = torch.onnx.export

    def dynamo_fails(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("cannot capture this model\nsecond line")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    report = onnx_export.export_checkpoint(trained_run / "best.pt", tmp_path / "model.onnx")
    path = "torch.onnx.export (TorchScript; dynamo failed: RuntimeError: cannot capture this model)"
    assert report.exporter == path and report.lowest_cosine >= 0.9999
    metadata = {e.key: e.value for e in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert metadata["exporter"] == path


def test_a_model_neither_exporter_can_export_is_refused_in_one_sentence(trained_run, tmp_path, monkeypatch,
                                                                        capsys):
    def refuses(*args, **kwargs):
        raise RuntimeError(f"{'dynamo' if kwargs.get('dynamo') else 'torchscript'} cannot export it")

    monkeypatch.setattr(torch.onnx, "export", refuses)
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", tmp_path / "m.onnx")
    assert code == 1 and err == ("error: neither of torch's ONNX exporters can export this model (dynamo: "
                                 "RuntimeError: dynamo cannot export it; TorchScript: RuntimeError: torchscript "
                                 "cannot export it)\n")
    assert left_over(tmp_path) == []


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_without_the_packages_export_says_what_to_install(trained_run, tmp_path, monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as when it is not installed
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", tmp_path / "m.onnx")
    assert code == 1 and ONE_SENTENCE.match(err), err
    assert err == (f"error: the ONNX export needs onnx, onnxruntime and onnxscript, and {missing} is not installed: "
                   f"pip install 'hw2p2-helpers[export]' (or pip install {missing})\n")
    assert left_over(tmp_path) == []


def test_without_onnxruntime_verify_and_embed_say_what_to_install(exported, demo_root, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    a, b = val_images(demo_root, 2)
    for command in (["verify", "--onnx", exported, a, b], ["embed", "--onnx", exported, a.parent, "--out",
                                                           tmp_path / "e.npz"]):
        code, _, err = call_cli(capsys, *command)
        assert code == 1 and err == ("error: running an ONNX model needs onnxruntime, which is not installed: "
                                     "pip install 'hw2p2-helpers[export]' (or pip install onnxruntime)\n"), err


def _rows(out: str):
    """(score, a, b, decision) of each line verify prints for a pair."""
    rows = []
    for line in out.splitlines():
        if not line.startswith("("):
            score, a, b, *decision = line.split(maxsplit=3)
            rows.append((float(score), a, b, " ".join(decision)))
    return rows


@pytest.mark.parametrize("tta", [False, True])
def test_verify_onnx_gives_the_checkpoints_answers_without_building_a_torch_model(exported, trained_run, demo_root,
                                                                                monkeypatch, capsys, tta):
    lines = (demo_root / "val_pairs.txt").read_text().splitlines()[:10]
    images = [demo_root / "ver_data" / name for line in lines for name in line.split()[:2]]
    flags = ["--tta"] if tta else []
    code, by_checkpoint, err = call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", *images, *flags)
    assert code == 0, err

    def no_model(*args, **kwargs):
        raise AssertionError("a torch model was built")

    monkeypatch.setattr(resnet.FaceModel, "__init__", no_model)
    monkeypatch.setattr(resnet.ResNet, "__init__", no_model)
    code, by_onnx, err = call_cli(capsys, "verify", "--onnx", exported, *images, *flags)
    assert code == 0, err
    expected, found = _rows(by_checkpoint), _rows(by_onnx)
    assert len(found) == 10 and [row[1:] for row in found] == [row[1:] for row in expected]
    assert np.allclose([row[0] for row in found], [row[0] for row in expected], atol=1.01e-4)
    if tta:  # the stored threshold was found without flips: neither gives a decision
        assert all(row[3] == "" for row in found) and "threshold" not in by_onnx
    else:
        assert {row[3] for row in found} <= {"same person", "different people"}
        assert by_checkpoint.splitlines()[-1].split(":")[0] == by_onnx.splitlines()[-1].split(":")[0]


def test_embed_onnx_writes_the_checkpoints_embeddings(exported, trained_run, demo_root, tmp_path, capsys):
    folder = tmp_path / "faces"
    shutil.copytree(demo_root / "ver_data", folder)
    (folder / "notes.jpg").write_text("not an image")
    code, out, err = call_cli(capsys, "embed", "--onnx", exported, folder, "--out", tmp_path / "onnx.npz", "--tta")
    assert code == 0 and "warning: skipped" in out and "notes.jpg" in out, err
    assert call_cli(capsys, "embed", "--checkpoint", trained_run / "best.pt", folder, "--out", tmp_path / "pt.npz",
                    "--tta")[0] == 0
    by_onnx, by_checkpoint = np.load(tmp_path / "onnx.npz"), np.load(tmp_path / "pt.npz")
    assert list(by_onnx["names"]) == list(by_checkpoint["names"]) and "notes.jpg" not in by_onnx["names"]
    assert np.min(np.sum(by_onnx["embeddings"] * by_checkpoint["embeddings"], axis=1)) >= 0.9999


def test_mistakes_with_an_onnx_model_get_one_sentence(exported, demo_root, tmp_path, capsys):
    a, b = val_images(demo_root, 2)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    foreign = onnx.load(exported)
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    cases = [
        (["--onnx", tmp_path / "missing.onnx"], f"ONNX model {tmp_path / 'missing.onnx'} does not exist"),
        (["--onnx", text], f"{text} is not a readable ONNX model ("),
        (["--onnx", tmp_path / "foreign.onnx"], "is not a face embedder exported by this toolkit"),
        (["--onnx", exported, "--score-norm", "as-norm"], "AS-norm needs the margin head's class centres"),
        (["--onnx", exported, "--weights", "ema"], "--weights applies to --checkpoint"),
        (["--onnx", exported, "--device", "cuda"], "--device cuda applies to --checkpoint"),
        (["--onnx", exported, tmp_path / "absent.jpg", a], f"image {tmp_path / 'absent.jpg'} does not exist"),
    ]
    for options, sentence in cases:
        code, _, err = call_cli(capsys, "verify", *options, a, b)
        assert code == 1 and ONE_SENTENCE.match(err) and sentence in err, (options, err)
    code, _, err = call_cli(capsys, "verify", "--onnx", exported, "--checkpoint", exported, a, b)
    assert code == 2 and "not allowed with argument" in err


def test_export_needs_val_pairs_to_check_on(trained_run, tmp_path, capsys):
    root = write_f25_root(tmp_path / "root", {"a.jpg": 0, "b.jpg": 1})
    code, _, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", tmp_path / "m.onnx",
                            "--data-root", root)
    assert code == 1 and ONE_SENTENCE.match(err) and "has no val_pairs.txt" in err, err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("variant", [["model.head=bn", "model.dropout=0.2"],
                                     ["model.depth=50", "model.block=preact", "model.stem=face",
                                      "model.embedding_dim=64"]])
def test_every_architecture_exports_as_pytorch_computes_it(demo_root, tmp_path, variant):
    from helpers.core.config import load_config
    from helpers.data.layout import open_data
    from helpers.eval.evaluation import EvalSettings

    cfg = load_config(overrides=["model.width=0.125", "data.image_size=32", *variant])
    torch.manual_seed(0)
    model = resnet.build_face_model(cfg, 12)
    with torch.no_grad():  # BatchNorm statistics of their own, not the identity a fresh layer starts as
        model.embed(torch.randn(16, 3, 32, 32) * 3 + 1)
    model.eval()
    report = onnx_export.export_model(model, open_data(demo_root), EvalSettings(image_size=32, batch_size=64),
                                      tmp_path / "model.onnx", {})
    assert report.lowest_cosine >= 0.9999 and report.embedding_dim == cfg.model.embedding_dim
    assert round(report.onnx_eer, 4) == round(report.torch_eer, 4)


def test_export_names_an_unreadable_val_image_it_leaves_out_of_its_check(trained_run, demo_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(demo_root, root)
    broken = val_images(root, 1)[0]
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated JPEG
    out = tmp_path / "m.onnx"
    code, printed, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out,
                                  "--data-root", root)
    assert code == 0, err
    assert printed.splitlines()[-1] == (f"left out of the check: 1 unreadable val image(s), so the pairs naming them "
                                        f"are not scored ({broken}: not a readable image: a truncated JPEG (100 "
                                        "bytes, its end marker missing)); run `python -m helpers check-data`")
    code, printed, err = call_cli(capsys, "export", "--checkpoint", trained_run / "best.pt", "--out", out,
                                  "--data-root", root, "--json")
    report = json.loads(printed)
    assert report["unreadable"] == [f"{broken}: not a readable image: a truncated JPEG (100 bytes, its end marker "
                                    "missing)"]
    assert report["images_compared"] == len(val_images(root, 10**6)) - 1
