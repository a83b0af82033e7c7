"""The shared training loop (caffe_common.solver) in real Caffe: learning rate, log, snapshots, resume,
divergence, interruption, refusal of states and weights that do not fit."""
from __future__ import annotations

import csv
import math
import os
import signal

import numpy as np
import pytest

from caffe_common import solver as sv

REGRESSION_NET = """
name: "regression"
layer { name: "data" type: "Python" top: "x" top: "y"
  python_param { module: "tests.caffe_test_layers" layer: "IterationDataLayer" param_str: "%s" } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "pred"
  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "y" top: "loss_reg" }
"""

SOLVER = """
net: "net.prototxt"
base_lr: 0.05
lr_policy: "step"
gamma: 0.5
stepsize: 10
momentum: 0.9
weight_decay: 0.0005
max_iter: 30
random_seed: 3
"""


def make_run(tmp_path, name="run", param_str="", solver=SOLVER):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "net.prototxt").write_text(REGRESSION_NET % param_str)
    (folder / "solver.prototxt").write_text(solver)
    return folder


def config(folder, **kwargs):
    kwargs.setdefault("progress", False)
    return sv.TrainConfig(solver=folder / "solver.prototxt", out_dir=folder / "out", **kwargs)


def read_log(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("policy", [
    'lr_policy: "fixed"',
    'lr_policy: "step" gamma: 0.5 stepsize: 3',
    'lr_policy: "multistep" gamma: 0.1 stepvalue: 2 stepvalue: 5',
    'lr_policy: "inv" gamma: 0.3 power: 0.75',
    'lr_policy: "poly" power: 2',
    'lr_policy: "exp" gamma: 0.9',
])
def test_learning_rate_equals_what_caffe_applies(caffe, tmp_path, policy):
    # loss = w . x with x = 1 and plain SGD: d loss / d w_j = 1, so each step moves w_j by exactly -lr(iter).
    net = tmp_path / "lr.prototxt"
    net.write_text("""
layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 dim: 4 } data_filler { type: "constant" value: 1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "s" param { lr_mult: 1 } inner_product_param { num_output: 1 bias_term: false } }
layer { name: "loss" type: "Python" bottom: "s" top: "loss" loss_weight: 1
  python_param { module: "tests.caffe_test_layers" layer: "ConstantGradientLoss" } }
""")
    solver_file = tmp_path / "lr_solver.prototxt"
    solver_file.write_text(f'net: "{net}"\nbase_lr: 0.2\n{policy}\nmax_iter: 8\nmomentum: 0\nweight_decay: 0\n')
    param = sv.read_solver(solver_file)
    solver = caffe.get_solver(str(solver_file))
    for iteration in range(8):
        before = solver.net.params["fc"][0].data.copy()
        solver.step(1)
        applied = (before - solver.net.params["fc"][0].data)[0, 0]
        assert applied == pytest.approx(sv.learning_rate(param, iteration), rel=1e-5), iteration


def test_train_writes_log_snapshots_weights_and_plot(caffe, tmp_path):
    folder = make_run(tmp_path)
    result = sv.train(config(folder, snapshot_every=10))
    rows = read_log(result.log)
    assert list(rows[0]) == ["iter", "lr", "loss", "loss_reg", "samples_per_s"]
    assert [int(r["iter"]) for r in rows] == list(range(1, 31))
    assert float(rows[0]["lr"]) == pytest.approx(0.05) and float(rows[-1]["lr"]) == pytest.approx(0.05 * 0.25)
    losses = [float(r["loss_reg"]) for r in rows]
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])  # it learns the linear map
    assert all(float(r["samples_per_s"]) > 0 for r in rows)
    assert result.weights.is_file() and result.iterations == 30
    states = sorted(p.name for p in (folder / "out" / "snapshots").glob("*.solverstate"))
    assert states == ["iter_10.solverstate", "iter_20.solverstate", "iter_30.solverstate"]
    assert result.plot is not None and result.plot.read_bytes()[:4] == b"\x89PNG"
    assert not list((folder / "out").rglob(".*tmp*")) and not (folder / "out" / ".snapshot_scratch").exists()
    net = caffe.Net(str(folder / "net.prototxt"), str(result.weights), caffe.TEST)
    assert net.params["fc"][0].data.shape == (1, 4)


def test_resumed_run_logs_the_same_losses_as_an_uninterrupted_one(caffe, tmp_path):
    whole = make_run(tmp_path, "whole")
    sv.train(config(whole, seed=7))
    parts = make_run(tmp_path, "parts")
    sv.train(config(parts, seed=7, max_iter=12, snapshot_every=6))
    # Cut the second run's log further back than the snapshot: rows after iteration 12 must be dropped.
    resumed = sv.train(config(parts, seed=7, resume=parts / "out" / "snapshots" / "iter_12.solverstate"))
    a, b = read_log(whole / "out" / "log.csv"), read_log(resumed.log)
    assert [r["iter"] for r in a] == [r["iter"] for r in b]
    np.testing.assert_allclose([float(r["loss_reg"]) for r in a], [float(r["loss_reg"]) for r in b], rtol=1e-5)
    np.testing.assert_allclose([float(r["lr"]) for r in a], [float(r["lr"]) for r in b])


def test_nan_loss_stops_with_iteration_and_last_good_snapshot(caffe, tmp_path):
    folder = make_run(tmp_path, param_str="nan_at=14")
    with pytest.raises(sv.TrainingDiverged) as info:
        sv.train(config(folder, snapshot_every=5))
    message = str(info.value)
    assert "iteration 15" in message and "iter_10.solverstate" in message
    assert len(read_log(folder / "out" / "log.csv")) == 14  # every finite row kept


def test_interruption_snapshots_and_resumes(caffe, tmp_path):
    folder = make_run(tmp_path)

    def interrupt(net, iteration):
        if iteration == 7:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(sv.TrainingInterrupted) as info:
        sv.train(config(folder, validate_every=1), validate=interrupt)
    assert info.value.resume_from.name == "iter_7.solverstate" and "--resume" in str(info.value)
    result = sv.train(config(folder, resume=info.value.resume_from))
    assert result.iterations == 30 and [int(r["iter"]) for r in read_log(result.log)][:8] == list(range(1, 9))



def test_sigterm_snapshots_like_ctrl_c_and_the_handler_is_restored(caffe, tmp_path):
    folder = make_run(tmp_path)
    before = signal.getsignal(signal.SIGTERM)

    def terminate(net, iteration):
        if iteration == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread before kill returns
        return {}

    with pytest.raises(sv.TrainingInterrupted) as info:
        sv.train(config(folder, validate_every=1), validate=terminate)
    assert info.value.resume_from.name == "iter_5.solverstate" and info.value.resume_from.is_file()
    assert signal.getsignal(signal.SIGTERM) is before
    result = sv.train(config(folder, resume=info.value.resume_from))
    assert result.iterations == 30

def test_validation_columns_are_logged(caffe, tmp_path):
    folder = make_run(tmp_path)
    seen = []

    def validate(net, iteration):
        seen.append(iteration)
        return {"val_w0": float(net.params["fc"][0].data[0, 0])}

    result = sv.train(config(folder, validate_every=10, validation_columns=["val_w0"]), validate=validate)
    rows = read_log(result.log)
    assert seen == [10, 20, 30]
    assert [r["val_w0"] for r in rows if r["val_w0"]] and rows[0]["val_w0"] == ""
    assert math.isfinite(float(rows[9]["val_w0"]))


def test_states_and_weights_of_another_net_are_refused_before_caffe(caffe, tmp_path):
    folder = make_run(tmp_path)
    result = sv.train(config(folder, max_iter=3))
    other = make_run(tmp_path, "other")
    (other / "net.prototxt").write_text((REGRESSION_NET % "").replace("num_output: 1", "num_output: 1 bias_term: false"))
    with pytest.raises(sv.TrainingError, match="not a state of this net"):
        sv.train(config(other, resume=result.weights.with_suffix(".solverstate")))
    with pytest.raises(sv.TrainingError, match="--init weights do not fit"):
        sv.train(config(other, init_weights=[result.weights]))
    with pytest.raises(sv.TrainingError, match="not a Caffe .solverstate"):
        bad = tmp_path / "bad.solverstate"
        bad.write_bytes(b"\xff\xfe garbage")
        sv.train(config(other, resume=bad))


def test_unwritable_output_folder_is_refused_before_work(tmp_path):
    folder = make_run(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(sv.TrainingError, match="cannot write to the output folder"):
        sv.train(sv.TrainConfig(solver=folder / "solver.prototxt", out_dir=blocker / "out", progress=False))


@pytest.mark.parametrize("change, message", [
    ('lr_policy: "step"\ngamma: 0.5\nstepsize: 10', None),
    ('lr_policy: "wobble"', "unknown lr_policy"),
    ('lr_policy: "step"\nstepsize: 0', "needs a positive stepsize"),
    ('type: "Lion"', "unknown solver type"),
])
def test_solver_settings_caffe_would_abort_on_are_refused(caffe, tmp_path, change, message):
    solver = SOLVER.replace('lr_policy: "step"\ngamma: 0.5\nstepsize: 10', change)
    folder = make_run(tmp_path, solver=solver)
    if message is None:
        assert sv.train(config(folder, max_iter=2)).iterations == 2
    else:
        with pytest.raises(sv.TrainingError, match=message):
            sv.train(config(folder, max_iter=2))


def test_a_train_net_caffe_cannot_build_is_refused_naming_the_layer(caffe, tmp_path):
    folder = make_run(tmp_path)
    (folder / "net.prototxt").write_text((REGRESSION_NET % "").replace("num_output: 1", "num_output: 1 axis: 7"))
    with pytest.raises(sv.TrainingError, match="cannot be built.*fc"):
        sv.train(config(folder, max_iter=2))


@pytest.mark.parametrize("error, status, prefix", [
    (sv.TrainingInterrupted("interrupted at iteration 3; resume with --resume s", None), 130, "interrupted: "),
    (KeyboardInterrupt(), 130, "interrupted: before the first iteration"),
    (sv.TrainingDiverged("loss is not finite"), 1, "error: "),
    (sv.TrainingError("bad solver"), 2, "error: "),
    (ValueError("bad value"), 2, "error: "),
])
def test_run_training_maps_every_end_to_its_exit_status(capsys, error, status, prefix):
    from caffe_common.cli import run_training

    def start():
        raise error

    assert run_training(start, refused=(ValueError,)) == (None, status)
    assert capsys.readouterr().err.startswith(prefix)
    assert run_training(lambda: "done") == ("done", 0)
