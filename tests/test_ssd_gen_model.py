"""``ssd-mobilenet gen-model``: the generated MobileNet-SSD nets against the reference nets, in real Caffe.

Deploy nets are compared as Caffe loads them (layer names, types, order, every blob shape, the prior
boxes' values). Train/test nets are compared as parsed protobuf with the ``AnnotatedData`` layer cut
off, and that layer as text, while this Caffe cannot parse SSD's augmentation fields; the tests that
load them with an LMDB run once the project's SSD patch is built.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ssd_mobilenet import model
from ssd_mobilenet.labelmap import (LabelMapError, check_labelmap, labelmap_text, load_labelmap, read_labelmap,
                                    write_labelmap)
from ssd_mobilenet.model import ModelConfigError, SsdModelConfig
from tests.conftest import REPO_ROOT, write_prototxt

REFERENCE = Path("reference") / "mobilenet_ssd"


# --------------------------------------------------------------------------- helpers
def _reference(shared_dir: Path, name: str) -> str:
    return (shared_dir / REFERENCE / name).read_text()


def _template(shared_dir: Path, name: str, classes: int) -> str:
    """The seed's gen_model.sh applied to its template (the reference procedure, for comparison only)."""
    text = _reference(shared_dir, Path("template") / name)
    for mark, factor in (("cls6x", 6), ("cls3x", 3), ("cls1x", 1)):
        text = text.replace(mark, str(classes * factor))
    return text


def _split_data_layer(text: str) -> tuple[str, str]:
    """(the AnnotatedData layer's text, the prototxt without it)."""
    first = text.index("layer {")
    second = text.index("layer {", first + 1)
    assert 'type: "AnnotatedData"' in text[first:second]
    return text[first:second], text[:first] + text[second:]


def _parsed(caffe, text: str):
    from google.protobuf import text_format

    if 'type: "AnnotatedData"' in text:
        text = _split_data_layer(text)[1]
    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def _assert_same_layers(built, reference) -> None:
    assert [layer.name for layer in built.layer] == [layer.name for layer in reference.layer]
    for mine, theirs in zip(built.layer, reference.layer):
        assert mine == theirs, f"layer {mine.name} differs:\n{mine}\nvs\n{theirs}"


def _normalised(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _load(caffe, tmp_path, text: str, name: str, phase=None):
    return caffe.Net(write_prototxt(tmp_path, text, name), caffe.TEST if phase is None else phase)


def _structure(net) -> tuple[list, dict]:
    """(layer (name, type) in order, blob shapes by name) of a loaded Caffe net."""
    layers = [(name, layer.type) for name, layer in zip(net._layer_names, net.layers)]
    return layers, {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}


def _expected_cell_priors(row: int, col: int, side: int, boxes: list[tuple[float, float]]) -> np.ndarray:
    """SSD prior boxes (x1, y1, x2, y2) of one cell for ``(scale, aspect ratio)`` pairs, independent of Caffe."""
    cx, cy = (col + 0.5) / side, (row + 0.5) / side
    out = []
    for scale, ratio in boxes:
        w, h = scale * np.sqrt(ratio), scale / np.sqrt(ratio)
        out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.array(out)


# --------------------------------------------------------------------------- deploy, in Caffe
@pytest.mark.shared
def test_deploy_loads_like_the_reference_deploy(caffe, shared_dir, tmp_path):
    mine = _load(caffe, tmp_path, model.net_text(SsdModelConfig(21), "deploy"), "mine.prototxt")
    theirs = caffe.Net(str(shared_dir / REFERENCE / "MobileNetSSD_deploy_bn.prototxt"), caffe.TEST)
    my_layers, my_blobs = _structure(mine)
    their_layers, their_blobs = _structure(theirs)
    assert my_layers == their_layers
    assert list(my_blobs.items()) == list(their_blobs.items())
    assert my_blobs["data"] == (1, 3, 300, 300)
    assert my_blobs["mbox_priorbox"] == (1, 2, 1917 * 4) and model.prior_count(SsdModelConfig(21)) == 1917
    assert my_blobs["mbox_conf"] == (1, 1917 * 21)
    assert {name: [p.data.shape for p in params] for name, params in mine.params.items()} == \
        {name: [p.data.shape for p in params] for name, params in theirs.params.items()}


@pytest.mark.shared
def test_deploy_without_batchnorm_has_the_reference_nobn_structure(caffe, shared_dir, tmp_path):
    # merge_bn drops each conv's BatchNorm + Scale: what is left must be the reference's no-BN deploy net.
    mine = _load(caffe, tmp_path, model.net_text(SsdModelConfig(21), "deploy"), "mine.prototxt")
    nobn = caffe.Net(str(shared_dir / REFERENCE / "MobileNetSSD_deploy_nobn.prototxt"), caffe.TEST)
    my_layers, my_blobs = _structure(mine)
    nobn_layers, nobn_blobs = _structure(nobn)
    assert [layer for layer in my_layers if layer[1] not in ("BatchNorm", "Scale")] == nobn_layers
    assert list(my_blobs.items()) == list(nobn_blobs.items())


@pytest.mark.shared
def test_deploy_equals_the_seed_deploy_template_layer_for_layer(caffe, shared_dir):
    # gen_model.sh's deploy output (template + class counts), all parameters included; for 21 classes
    # the conf layers keep the reference names, for others they get the seed's *_new names.
    for classes in (21, 6):
        template = _template(shared_dir, "MobileNetSSD_deploy_template.prototxt", classes)
        if classes == 21:
            template = template.replace('_mbox_conf_new"', '_mbox_conf"')
        built, reference = _parsed(caffe, model.net_text(SsdModelConfig(classes), "deploy")), _parsed(caffe, template)
        assert list(built.input) == list(reference.input) == ["data"]
        assert built.input_shape == reference.input_shape
        _assert_same_layers(built, reference)


def test_conv11_priors_are_the_reference_anchors_and_tf_anchors_change_only_the_first(caffe, tmp_path):
    priors = {}
    for tf in (False, True):
        net = _load(caffe, tmp_path, model.net_text(SsdModelConfig(3, tf_anchors=tf), "deploy"), f"d{tf}.prototxt")
        net.forward(end="mbox_priorbox")
        priors[tf] = net.blobs["mbox_priorbox"].data.copy()
    # the Reshape / Slice / Silence / Concat assembly of TF's anchors also reads in OpenCV DNN, with the same boxes
    import cv2

    net.save(str(tmp_path / "d.caffemodel"))
    opencv = cv2.dnn.readNetFromCaffe(str(tmp_path / "dTrue.prototxt"), str(tmp_path / "d.caffemodel"))
    opencv.setInput(np.zeros((1, 3, 300, 300), np.float32))
    np.testing.assert_allclose(opencv.forward("mbox_priorbox"), priors[True], atol=1e-6)
    assert priors[False].shape == priors[True].shape == (1, 2, 1917 * 4)
    conv11 = 19 * 19 * 3
    for tf, first_scale in ((False, 0.2), (True, 0.1)):
        boxes = priors[tf][0, 0].reshape(-1, 4)
        for row, col in ((0, 0), (9, 4), (18, 18)):
            cell = (row * 19 + col) * 3
            expected = _expected_cell_priors(row, col, 19, [(first_scale, 1.0), (0.2, 2.0), (0.2, 0.5)])
            np.testing.assert_allclose(boxes[cell:cell + 3], expected, atol=1e-6)
        np.testing.assert_allclose(priors[tf][0, 1].reshape(-1, 4), np.tile([0.1, 0.1, 0.2, 0.2], (1917, 1)))
    changed = np.any(priors[False][0, 0].reshape(-1, 4) != priors[True][0, 0].reshape(-1, 4), axis=1)
    assert np.array_equal(np.flatnonzero(changed), np.arange(0, conv11, 3))  # the first box of each conv11 cell
    # conv13's first cell: (0.35, 1), sqrt(0.35 * 0.5) square, then 2, 1/2, 3, 1/3 at 0.35
    conv13 = priors[False][0, 0].reshape(-1, 4)[conv11:conv11 + 6]
    expected = _expected_cell_priors(0, 0, 10, [(0.35, 1.0), (np.sqrt(0.35 * 0.5), 1.0), (0.35, 2.0),
                                                (0.35, 0.5), (0.35, 3.0), (0.35, 1 / 3)])
    np.testing.assert_allclose(conv13, expected, atol=1e-6)


def test_relu6_width_and_size_change_only_what_they_name(caffe, tmp_path):
    config = SsdModelConfig(4, width=0.75, relu6=True, size=512)
    net = _load(caffe, tmp_path, model.net_text(config, "deploy"), "d.prototxt")
    layers, blobs = _structure(net)
    activations = {kind for name, kind in layers if name.endswith("/relu")}
    assert activations == {"ReLU6"} and len([1 for name, _ in layers if name.endswith("/relu")]) == 35
    assert blobs["data"] == (1, 3, 512, 512)
    assert blobs["conv0"][1] == 24 and blobs["conv13"][1] == 768 and blobs["conv17_2"][1] == 96
    sides = [blobs[source][2] for source in model.HEAD_SOURCES]
    assert tuple(sides) == model.feature_map_sizes(512) == (32, 16, 8, 4, 2, 1)
    assert blobs["mbox_priorbox"] == (1, 2, model.prior_count(config) * 4)
    assert model.prior_count(config) == 32 * 32 * 3 + (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 6
    net.forward(end="mbox_priorbox")
    first = net.blobs["mbox_priorbox"].data[0, 0, :4]
    np.testing.assert_allclose(first[2] - first[0], 102 / 512, atol=1e-6)  # 20% of the side, whole pixels
    assert [spec.min_size for spec in model.prior_specs(config)] == [102, 179, 256, 333, 410, 486]
    # half width: every channel count halves, heads unchanged
    half = _load(caffe, tmp_path, model.net_text(SsdModelConfig(4, width=0.5), "deploy"), "h.prototxt")
    assert half.blobs["conv1"].data.shape[1] == 32 and half.blobs["conv15_1"].data.shape[1] == 64
    assert half.blobs["mbox_loc"].data.shape == (1, 1917 * 4)


def test_feature_map_sizes_follow_caffe_and_small_inputs_are_refused(caffe, tmp_path):
    assert model.feature_map_sizes(300) == (19, 10, 5, 3, 2, 1)
    net = _load(caffe, tmp_path, model.net_text(SsdModelConfig(2, size=257), "deploy"), "d.prototxt")
    assert tuple(net.blobs[source].data.shape[2] for source in model.HEAD_SOURCES) == model.feature_map_sizes(257)
    assert model.feature_map_sizes(257)[-2:] == (2, 1)
    assert model.feature_map_sizes(256)[-2:] == (1, 1)  # why 256 is refused
    for bad, match in ((256, "--size 256: choose a side from 257"), (4096, "--size 4096"),
                       (300.5, "--size 300.5")):
        with pytest.raises(ModelConfigError, match=match):
            SsdModelConfig(21, size=bad).check()
    with pytest.raises(ModelConfigError, match="--classes 1: need at least 2"):
        SsdModelConfig(1).check()
    with pytest.raises(ModelConfigError, match="--width 0.6"):
        SsdModelConfig(21, width=0.6).check()


# --------------------------------------------------------------------------- train / test, as protobuf
@pytest.mark.shared
def test_train_and_test_nets_equal_the_reference_nets(caffe, shared_dir):
    for phase, name in (("train", "MobileNetSSD_train.prototxt"), ("test", "MobileNetSSD_test.prototxt")):
        text, reference = model.net_text(SsdModelConfig(21), phase), _reference(shared_dir, name)
        assert text.startswith('name: "MobileNet-SSD"\n')
        _assert_same_layers(_parsed(caffe, text), _parsed(caffe, reference))
        # the AnnotatedData layer (augmentation, samplers, batch size, sources), line for line
        assert _normalised(_split_data_layer(text)[0]) == _normalised(_split_data_layer(reference)[0])
    train = {layer.name: layer for layer in _parsed(caffe, model.net_text(SsdModelConfig(21), "train")).layer}
    loss = train["mbox_loss"].multibox_loss_param
    assert (loss.num_classes, loss.neg_pos_ratio, loss.overlap_threshold) == (21, 3.0, 0.5)
    assert list(train["mbox_loss"].propagate_down) == [True, True, False, False]
    assert train["conv0"].param[0].lr_mult == pytest.approx(0.1)  # the backbone is fine-tuned at 0.1x
    assert train["conv11_mbox_conf"].param[0].lr_mult == 1.0


@pytest.mark.shared
def test_other_class_counts_equal_the_seed_templates_with_new_conf_names(caffe, shared_dir):
    for phase in ("train", "test"):
        template = _template(shared_dir, f"MobileNetSSD_{phase}_template.prototxt", 6)
        text = model.net_text(SsdModelConfig(6), phase)
        built = _parsed(caffe, text)
        _assert_same_layers(built, _parsed(caffe, template))
        assert _normalised(_split_data_layer(text)[0]) == _normalised(_split_data_layer(template)[0])
        conf = [layer for layer in built.layer if "_mbox_conf" in layer.name and layer.type == "Convolution"]
        assert [layer.name for layer in conf] == [f"{s}_mbox_conf_new" for s in model.HEAD_SOURCES]
        assert [layer.top[0] for layer in conf] == [f"{s}_mbox_conf" for s in model.HEAD_SOURCES]


@pytest.mark.shared
def test_solver_is_the_reference_solver(caffe, shared_dir):
    from google.protobuf import text_format

    pb2 = caffe.proto.caffe_pb2
    mine, theirs = pb2.SolverParameter(), pb2.SolverParameter()
    text_format.Merge(model.solver_text(SsdModelConfig(21), "/o/train.prototxt", "/o/test.prototxt", "/o/s/m"), mine)
    text_format.Merge(_reference(shared_dir, "solver.prototxt"), theirs)
    assert (mine.train_net, list(mine.test_net), mine.snapshot_prefix) == ("/o/train.prototxt", ["/o/test.prototxt"],
                                                                          "/o/s/m")
    assert mine.solver_mode == pb2.SolverParameter.CPU  # this project's Caffe is CPU-only
    for field in ("train_net", "test_net", "snapshot_prefix", "solver_mode"):
        mine.ClearField(field)
        theirs.ClearField(field)
    assert mine == theirs
    evaluate = pb2.SolverParameter()
    text_format.Merge(model.solver_text(SsdModelConfig(21), "t", "v", "s", evaluate_only=True), evaluate)
    assert (evaluate.max_iter, evaluate.snapshot_after_train, evaluate.test_interval) == (0, False, 10000)


# --------------------------------------------------------------------------- label maps
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_labelmap_round_trip_and_the_reference_example(caffe, shared_dir, tmp_path):
    path = write_labelmap(tmp_path / "labelmap.prototxt", ["face", 'odd "name"'])
    items = load_labelmap(path, 3)
    assert [(i.name, i.label, i.display_name) for i in items] == [
        ("none_of_the_above", 0, "background"), ("face", 1, "face"), ('odd "name"', 2, 'odd "name"')]
    from google.protobuf import text_format

    parsed = caffe.proto.caffe_pb2.LabelMap()
    text_format.Merge(labelmap_text(["face"]), parsed)  # Caffe's own message reads it
    assert [item.label for item in parsed.item] == [0, 1]
    assert len(load_labelmap(shared_dir / REFERENCE / "labelmap_example.prototxt", 6)) == 6
    with pytest.raises(LabelMapError, match="duplicate|more than one"):
        write_labelmap(tmp_path / "dup.prototxt", ["a", "a"])


@pytest.mark.parametrize("text, classes, message", [
    ('item { name: "a" label: 1 } item { name: "b" label: 2 }', 3, "no item has label 0.*background"),
    ('item { name: "bg" label: 0 } item { name: "a" label: 1 }', 21,
     r"2 classes \(labels 0 .. 1, background included\) but --classes is 21; pass --classes 2"),
    ('item { name: "bg" label: 0 } item { name: "a" label: 1 } item { name: "b" label: 1 }', 3,
     "label 1 is given to more than one item"),
    ('item { name: "bg" label: 0 } item { name: "a" label: 1 } item { name: "a" label: 2 }', 3,
     "name 'a' is given to more than one item"),
    ('item { name: "bg" label: 0 } item { name: "a" label: 1 } item { name: "b" label: 3 }', 3,
     r"labels must be 0 .. 2 without gaps \(found 0-1, 3; missing 2\)"),
    ("", 2, "has no items"),
    ("item { name: 'a' label: zero }", 2, "does not parse as Caffe's LabelMap"),
])
def test_unusable_labelmaps_are_refused_naming_the_file(tmp_path, text, classes, message):
    path = _write(tmp_path / "labelmap.prototxt", text)
    with pytest.raises(LabelMapError, match=message) as info:
        load_labelmap(path, classes)
    assert str(info.value).startswith(str(path))


def test_missing_labelmap_and_unchecked_count(tmp_path):
    with pytest.raises(LabelMapError, match="label map not found"):
        read_labelmap(tmp_path / "nope.prototxt")
    items = read_labelmap(write_labelmap(tmp_path / "l.prototxt", ["x", "y"]))
    check_labelmap(items, None, "l.prototxt")  # no class count to compare with


# --------------------------------------------------------------------------- the CLI and the script
def _cli(*args: str) -> int:
    from ssd_mobilenet.cli import main

    return main(["gen-model", *args])


def _fake_lmdb(caffe, path: Path, records: int, value: bytes | None = None) -> Path:
    """An LMDB of ``records`` AnnotatedDatum records without images (enough for counting), or of ``value``."""
    import lmdb

    datum = caffe.proto.caffe_pb2.AnnotatedDatum()
    datum.type = caffe.proto.caffe_pb2.AnnotatedDatum.BBOX
    with lmdb.open(str(path), map_size=1 << 20) as env, env.begin(write=True) as txn:
        for i in range(records):
            txn.put(b"%08d" % i, datum.SerializeToString() if value is None else value)
    return path


def test_cli_writes_the_five_files_with_checked_inputs(caffe, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    labelmap = write_labelmap(tmp_path / "my_labels.prototxt", ["cat", "dog"])
    train, _ = _fake_lmdb(caffe, tmp_path / "train_lmdb", 5), _fake_lmdb(caffe, tmp_path / "test_lmdb", 17)
    assert _cli("--classes", "3", "--labelmap", str(labelmap), "--train-lmdb", "train_lmdb",
                "--test-lmdb", "test_lmdb", "--tf-anchors", "--out", "nets") == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "1917 priors" in out and "test_iter 3: 17 test images" in out
    written = sorted(p.name for p in (tmp_path / "nets").iterdir())
    assert written == sorted([*model.OUTPUT_FILES, "snapshot"])
    train_text = (tmp_path / "nets" / model.TRAIN_NET).read_text()
    data, _ = _split_data_layer(train_text)
    assert f'source: "{train}"' in data and f'label_map_file: "{labelmap}"' in data  # absolute paths
    assert "conv11_mbox_priorbox_small" in train_text
    solver = (tmp_path / "nets" / model.SOLVER_TRAIN).read_text()
    assert f'train_net: "{tmp_path / "nets" / model.TRAIN_NET}"' in solver and "test_iter: 3\n" in solver
    assert f'snapshot_prefix: "{tmp_path / "nets" / "snapshot" / "mobilenet"}"' in solver
    # the generated deploy net runs in Caffe
    net = caffe.Net(str(tmp_path / "nets" / model.DEPLOY_NET), caffe.TEST)
    assert net.blobs["mbox_conf_flatten"].data.shape == (1, 1917 * 3)


@pytest.mark.parametrize("args, message", [
    (["--classes", "21", "--labelmap", "labels.prototxt"], "labels.prototxt: the label map has 3 classes"),
    (["--classes", "3", "--train-lmdb", "missing_lmdb"], "--train-lmdb missing_lmdb: no LMDB there"),
    (["--classes", "3", "--test-lmdb", "empty_lmdb"], "--test-lmdb empty_lmdb: the LMDB holds no records"),
    (["--classes", "3", "--train-lmdb", "other_lmdb"], "--train-lmdb other_lmdb: its records are not SSD AnnotatedDatum"),
    (["--classes", "3", "--size", "200"], "--size 200"),
    (["--classes", "3", "--train-lmdb", "one_lmdb", "--test-lmdb", "one_lmdb"],
     "--train-lmdb and --test-lmdb are the same path"),
    (["--classes", "3", "--out", "a_file"], "--out a_file: exists and is not a folder"),
])
def test_cli_refuses_bad_input_and_writes_nothing(caffe, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    write_labelmap(tmp_path / "labels.prototxt", ["cat", "dog"])
    _fake_lmdb(caffe, tmp_path / "empty_lmdb", 0)
    _fake_lmdb(caffe, tmp_path / "one_lmdb", 1)
    _fake_lmdb(caffe, tmp_path / "other_lmdb", 2, value=b"\x08\x01" * 30)  # e.g. another tool's records
    (tmp_path / "a_file").write_text("")
    out = [] if "--out" in args else ["--out", "nets"]
    assert _cli(*args, *out) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "nets").exists()


def test_seed_default_labelmap_in_the_current_folder_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "labelmap.prototxt", 'item { name: "a" label: 1 }')
    assert _cli("--classes", "2", "--out", "nets") == 2
    assert "labelmap.prototxt: no item has label 0" in capsys.readouterr().err


def test_gen_model_script_keeps_the_seed_usage(tmp_path):
    script = REPO_ROOT / "scripts" / "gen_model.sh"
    for args in ([], ["abc"]):
        run = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 1 and "usage:" in run.stderr and "for voc the CLASSNUM is 21" in run.stderr
    assert re.search(r"--classes \"\$classes\" --out example", script.read_text())


# --------------------------------------------------------------------------- full Caffe loading (SSD patch)
def _ssd_fields_missing(caffe) -> bool:
    fields = caffe.proto.caffe_pb2.TransformationParameter.DESCRIPTOR.fields_by_name
    return not {"resize_param", "distort_param", "expand_param"} <= set(fields)


@pytest.fixture
def ssd_caffe(caffe):
    if _ssd_fields_missing(caffe):
        pytest.skip("this Caffe's TransformationParameter has no distort_param (the SSD build patch in "
                    "scripts/caffe_build/patches is not built yet): train/test nets cannot be loaded")
    return caffe


def _alias(path: Path, name: str) -> Path:
    """Another path to the same LMDB: Caffe's data reader shares one reader between data layers with the
    same name and source, and the second would wait for ever."""
    alias = path.with_name(name)
    alias.symlink_to(path, target_is_directory=True)
    return alias


def _annotated_lmdb(tmp_path: Path) -> Path:
    import cv2

    from ssd_mobilenet.annotated_lmdb import AnnotatedImage, LabeledBox, write_annotated_lmdb

    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
        items.append(AnnotatedImage(path, [LabeledBox(1 + i, 0.1, 0.2, 0.7, 0.9)]))
    write_annotated_lmdb(tmp_path / "lmdb", items)
    return tmp_path / "lmdb"


@pytest.mark.shared
def test_train_and_test_nets_load_in_caffe_like_the_references(ssd_caffe, shared_dir, tmp_path):
    caffe = ssd_caffe
    source = _annotated_lmdb(tmp_path)
    labelmap = write_labelmap(tmp_path / "labelmap.prototxt", [f"c{i}" for i in range(1, 21)])
    config, _ = model.resolve_config(21, train_lmdb=source, test_lmdb=_alias(source, "test_lmdb"), labelmap=labelmap)
    config = dataclasses.replace(config, train_batch_size=2, test_batch_size=2)  # small nets: memory, time
    for phase, name, caffe_phase in (("train", "MobileNetSSD_train.prototxt", caffe.TRAIN),
                                     ("test", "MobileNetSSD_test.prototxt", caffe.TEST)):
        reference = _reference(shared_dir, name)
        alias = _alias(source, f"reference_{phase}_lmdb")
        for pattern, value in ((r'source: "[^"]*"', f'source: "{alias}"'), (r"batch_size: \d+", "batch_size: 2"),
                               (r'label_map_file: "[^"]*"', f'label_map_file: "{labelmap}"')):
            reference, count = re.subn(pattern, value, reference)
            assert count == 1
        _assert_same_layers(_parsed_full(caffe, model.net_text(config, phase).replace(
            getattr(config, f"{phase}_lmdb"), str(alias))), _parsed_full(caffe, reference))
        mine = _load(caffe, tmp_path, model.net_text(config, phase), f"{phase}.prototxt", caffe_phase)
        theirs = _load(caffe, tmp_path, reference, f"ref_{phase}.prototxt", caffe_phase)
        assert _structure(mine) == _structure(theirs)
        del mine, theirs


def _parsed_full(caffe, text: str):
    from google.protobuf import text_format

    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def test_generated_train_net_trains_one_step(ssd_caffe, tmp_path):
    caffe = ssd_caffe
    source = _annotated_lmdb(tmp_path)
    labelmap = write_labelmap(tmp_path / "labelmap.prototxt", ["a", "b"])
    config, _ = model.resolve_config(3, train_lmdb=source, test_lmdb=_alias(source, "test_lmdb"), labelmap=labelmap)
    result = model.write_model(dataclasses.replace(config, train_batch_size=2, test_batch_size=2),
                               tmp_path / "nets")
    solver = caffe.get_solver(str(result.files[model.SOLVER_TRAIN]))
    solver.step(1)
    loss = float(solver.net.blobs["mbox_loss"].data)
    assert np.isfinite(loss) and loss > 0
    assert np.abs(solver.net.params["conv11_mbox_conf_new"][0].diff).sum() > 0
    out = solver.test_nets[0].forward()
    assert out["detection_eval"].shape[-1] == 5
