"""The training loop of both detectors: a Python loop over ``caffe.get_solver``.

Caffe's own ``caffe train`` loop prints losses to glog and snapshots when told to; users of this
toolkit get instead, from :func:`train`:

* a progress bar with the losses and samples/s, and ``<out>/log.csv`` (one row per ``log_every``
  iterations: ``iter, lr, loss``, every scalar output of the net, ``samples_per_s``, then the
  columns of an optional validation callback), flushed row by row;
* snapshots written atomically (``<out>/snapshots/iter_N.caffemodel`` + ``.solverstate``; the state is
  renamed into place last, so a state on disk always has its weights) and the last few kept;
* resume from a solver state (iteration count, learning-rate schedule, momentum history; the log is
  cut back to the resumed iteration; Python data layers that define ``set_iteration(i)`` are told
  where to continue, so the data order is the same as without the stop);
* a NaN/inf loss stops the run with the iteration and the last good snapshot named
  (:class:`TrainingDiverged`); Ctrl-C or SIGTERM (`kill`) snapshots the finished iterations and raises
  :class:`TrainingInterrupted` (resumable);
* a loss plot ``<out>/loss.png`` at the end.

The learning rate shown is computed from the solver parameters exactly as ``SGDSolver::GetLearningRate``
(pycaffe does not expose it): :func:`learning_rate`.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .atomic import atomic_path, write_text_atomic

#: Snapshots kept besides the final weights (older ones are deleted).
KEEP_SNAPSHOTS = 3
SNAPSHOT_DIR = "snapshots"
LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
EFFECTIVE_SOLVER = "solver.prototxt"


class TrainingError(RuntimeError):
    """A training run that cannot start or cannot go on; the message says why and what to do."""


class TrainingDiverged(TrainingError):
    """A loss became NaN or infinite."""


class TrainingInterrupted(TrainingError):
    """Ctrl-C or SIGTERM: the finished iterations were snapshotted; ``resume_from`` continues the run."""

    def __init__(self, message: str, resume_from: Path | None):
        super().__init__(message)
        self.resume_from = resume_from


#: ``validate(net, iteration) -> {column: value}`` run every ``validate_every`` iterations on the train net
#: (or on a test net of its own); its columns are declared up front in :attr:`TrainConfig.validation_columns`.
Validator = Callable[[Any, int], Mapping[str, float]]


@dataclass
class TrainConfig:
    """What :func:`train` needs. ``solver`` is a solver prototxt whose ``net``/``train_net`` is the train net."""

    solver: Path
    out_dir: Path
    max_iter: int | None = None                 # overrides the solver's max_iter
    base_lr: float | None = None                # overrides the solver's base_lr
    init_weights: Sequence[Path] = ()           # caffemodels copied into the net by layer name
    resume: Path | None = None                  # a .solverstate written by this loop
    seed: int | None = None                     # Caffe's random_seed (fillers, dropout)
    snapshot_every: int = 0                     # 0: the solver's ``snapshot`` value, else 1000
    log_every: int = 1
    validate_every: int = 0                     # 0: no validation
    validation_columns: Sequence[str] = ()
    progress: bool = True
    drop_solver_tests: bool = False             # the validation callback replaces Caffe's own test phase


@dataclass
class TrainResult:
    """What a finished :func:`train` run wrote."""

    iterations: int
    weights: Path
    log: Path
    plot: Path | None
    last_row: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- solver parameters
def read_solver(path: str | Path) -> Any:
    """Parse a solver prototxt into a ``SolverParameter``; errors name the file."""
    from google.protobuf import text_format

    from .model_files import CaffeModelError, caffe_pb2

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"solver file not found: {path}")
    param = caffe_pb2().SolverParameter()
    try:
        text_format.Merge(path.read_text(encoding="utf-8", errors="replace"), param)
    except text_format.ParseError as exc:
        raise TrainingError(f"{path}: not a valid Caffe solver prototxt: {exc}") from exc
    except CaffeModelError as exc:  # pragma: no cover - Caffe missing
        raise TrainingError(str(exc)) from exc
    return param


def learning_rate(param: Any, iteration: int) -> float:
    """The learning rate Caffe's SGD-family solvers use at ``iteration`` (``SGDSolver::GetLearningRate``)."""
    policy, base = param.lr_policy or "fixed", param.base_lr
    if policy == "fixed":
        return base
    if policy == "step":
        return base * param.gamma ** (iteration // param.stepsize)
    if policy == "multistep":
        return base * param.gamma ** sum(iteration >= s for s in param.stepvalue)
    if policy == "exp":
        return base * param.gamma ** iteration
    if policy == "inv":
        return base * (1 + param.gamma * iteration) ** (-param.power)
    if policy == "poly":
        return base * (1 - iteration / param.max_iter) ** param.power
    if policy == "sigmoid":
        return base / (1 + math.exp(-param.gamma * (iteration - param.stepsize)))
    raise TrainingError(f"unknown lr_policy {policy!r}")


SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")


def check_solver_param(param: Any, path: Path) -> None:
    """Refuse solver settings on which Caffe would abort mid-run (unknown policy or type, zero step)."""
    if param.type and param.type not in SOLVER_TYPES:
        raise TrainingError(f"{path}: unknown solver type {param.type!r} (one of {', '.join(SOLVER_TYPES)})")
    if param.lr_policy == "step" and param.stepsize <= 0:
        raise TrainingError(f"{path}: lr_policy \"step\" needs a positive stepsize")
    if param.lr_policy == "multistep" and list(param.stepvalue) != sorted(param.stepvalue):
        raise TrainingError(f"{path}: multistep stepvalue entries must increase")
    if not (math.isfinite(param.base_lr) and param.base_lr > 0):
        raise TrainingError(f"{path}: base_lr must be a positive number, got {param.base_lr}")
    learning_rate(param, 0)  # raises for an unknown lr_policy


def _resolve_net_path(solver_path: Path, name: str) -> Path:
    """A net path of a solver file: absolute, else relative to the working folder (Caffe's rule) or, when
    no file is there, to the solver's folder (what users expect of a self-contained folder)."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path.resolve()
    beside = solver_path.parent / path
    if beside.exists():
        return beside.resolve()
    raise TrainingError(f"{solver_path}: net file {name!r} not found (relative to {Path.cwd()} or to the solver's folder)")


def train_net_path(solver_path: Path, param: Any) -> Path:
    """The train net file named by a solver (``net`` or ``train_net``)."""
    name = param.train_net or param.net
    if not name:
        raise TrainingError(f"{solver_path}: the solver names no net (set `net:` or `train_net:`)")
    return _resolve_net_path(solver_path, name)


def effective_solver(config: TrainConfig, param: Any, snapshot_prefix: Path) -> Any:
    """The solver parameters this loop runs with: CPU, absolute net paths, snapshots under our control."""
    solver_path = Path(config.solver)
    out = type(param)()
    out.CopyFrom(param)
    if param.train_net:
        out.train_net = str(train_net_path(solver_path, param))
    if param.net:
        out.net = str(_resolve_net_path(solver_path, param.net))
    for k, name in enumerate(param.test_net):
        out.test_net[k] = str(_resolve_net_path(solver_path, name))
    if config.max_iter is not None:
        out.max_iter = config.max_iter
    if config.base_lr is not None:
        out.base_lr = config.base_lr
    if config.seed is not None:
        out.random_seed = config.seed
    if config.drop_solver_tests:          # no test nets built, no TestAll() inside step()
        del out.test_net[:], out.test_iter[:], out.test_state[:]
        out.ClearField("test_interval")
        out.ClearField("test_initialization")
    out.snapshot = 0                      # this loop snapshots (atomically)
    out.snapshot_after_train = False
    out.snapshot_prefix = str(snapshot_prefix)
    out.snapshot_format = out.BINARYPROTO
    out.display = 0
    out.solver_mode = out.CPU
    return out


# --------------------------------------------------------------------------- loss bookkeeping
def loss_weights(net_param: Any) -> dict[str, float]:
    """Top blob -> loss weight, as Caffe assigns them: explicit ``loss_weight``, else 1 for the first top
    of a ``*Loss`` layer and 0 otherwise."""
    weights: dict[str, float] = {}
    for layer in net_param.layer:
        for k, top in enumerate(layer.top):
            if k < len(layer.loss_weight):
                weights[top] = float(layer.loss_weight[k])
            elif k == 0 and layer.type.endswith("Loss"):
                weights[top] = 1.0
    return weights


def scalar_outputs(net: Any) -> list[str]:
    """The net's output blobs holding one value (losses, accuracies): the columns of the log."""
    return [name for name in net.outputs if net.blobs[name].data.size == 1]


def batch_size(net: Any, iter_size: int) -> int:
    """Samples per iteration: the first blob's batch dimension times ``iter_size``."""
    first = next(iter(net.blobs.values()))
    return int(first.shape[0]) * max(1, iter_size) if first.data.ndim else max(1, iter_size)


# --------------------------------------------------------------------------- snapshots
def snapshot_paths(out_dir: Path, iteration: int) -> tuple[Path, Path]:
    """``(caffemodel, solverstate)`` of the snapshot at ``iteration``."""
    base = Path(out_dir) / SNAPSHOT_DIR / f"iter_{iteration}"
    return base.with_suffix(".caffemodel"), base.with_suffix(".solverstate")


def latest_snapshot(out_dir: str | Path) -> Path | None:
    """The newest ``.solverstate`` under ``<out_dir>/snapshots`` (None when there is none)."""
    states = sorted((Path(out_dir) / SNAPSHOT_DIR).glob("iter_*.solverstate"),
                    key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else -1)
    return states[-1] if states else None


def write_snapshot(solver: Any, out_dir: Path, tmp_prefix: Path) -> Path:
    """Snapshot ``solver`` atomically; returns the ``.solverstate`` path.

    Caffe writes ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (whose ``learned_net`` names the
    caffemodel). Both are written in a scratch folder, the caffemodel is renamed into place first, then
    the state (pointing at the final caffemodel) is written atomically: a state on disk always has its weights.
    """
    from .model_files import caffe_pb2

    iteration = solver.iter
    solver.snapshot()
    scratch_model = Path(f"{tmp_prefix}_iter_{iteration}.caffemodel")
    scratch_state = Path(f"{tmp_prefix}_iter_{iteration}.solverstate")
    model, state_path = snapshot_paths(out_dir, iteration)
    model.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch_model, model)
    state = caffe_pb2().SolverState()
    state.ParseFromString(scratch_state.read_bytes())
    state.learned_net = str(model.resolve())
    with atomic_path(state_path) as tmp:
        tmp.write_bytes(state.SerializeToString())
    scratch_state.unlink(missing_ok=True)
    _prune_snapshots(out_dir)
    return state_path


def _prune_snapshots(out_dir: Path, keep: int = KEEP_SNAPSHOTS) -> None:
    states = sorted((Path(out_dir) / SNAPSHOT_DIR).glob("iter_*.solverstate"),
                    key=lambda p: int(p.stem.split("_")[1]))
    for old in states[:-keep]:
        old.with_suffix(".caffemodel").unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def read_solver_state(path: Path) -> Any:
    """Parse a ``.solverstate``; errors name the file."""
    from google.protobuf.message import DecodeError

    from .model_files import caffe_pb2

    if not Path(path).is_file():
        raise TrainingError(f"solver state not found: {path}")
    state = caffe_pb2().SolverState()
    try:
        state.ParseFromString(Path(path).read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise TrainingError(f"{path}: not a Caffe .solverstate ({exc})") from exc
    return state


def weight_fit_problems(net: Any, weights_path: Path, require_all: bool) -> list[str]:
    """How the weights in ``weights_path`` do not fit the built ``net`` (checked in Python: Caffe's
    ``copy_from`` aborts on a shape mismatch). ``require_all``: every learned layer must be in the file
    (a resumed state); otherwise layers missing from the file keep their fillers (fine-tuning new heads),
    but at least one layer must match."""
    from .model_files import CaffeModelError, blob_shape, read_caffemodel, shape_equals, weights_by_layer

    try:
        weights = weights_by_layer(read_caffemodel(weights_path))
    except CaffeModelError as exc:
        return [str(exc)]
    problems, matched = [], 0
    for name, layer in zip(net._layer_names, net.layers):
        if not len(layer.blobs):
            continue
        blobs = weights.get(name)
        if blobs is None:
            if require_all:
                problems.append(f"layer '{name}' has no weights in {weights_path}")
            continue
        matched += 1
        if len(blobs) != len(layer.blobs):
            problems.append(f"layer '{name}': the net has {len(layer.blobs)} blob(s), {weights_path} has {len(blobs)}")
            continue
        for k, blob in enumerate(blobs):
            if not shape_equals(layer.blobs[k].data.shape, blob):
                problems.append(f"layer '{name}' blob {k}: the net has shape {tuple(layer.blobs[k].data.shape)}, "
                                f"{weights_path} has {blob_shape(blob)}")
    if not matched:
        problems.append(f"no layer of the net has weights in {weights_path} (weights of another network?)")
    return problems


def check_resumable(state_path: Path, net: Any) -> Path:
    """Check that a solver state belongs to ``net`` before Caffe reads it (a mismatch aborts Caffe).

    Returns the state file to hand to ``solver.restore`` (a rewritten copy when the weights were moved
    beside the state). Raises :class:`TrainingError` naming what does not fit.
    """
    state = read_solver_state(state_path)
    learned = Path(state.learned_net) if state.learned_net else None
    if learned is None or not learned.is_file():
        beside = Path(state_path).with_suffix(".caffemodel")
        if not beside.is_file():
            raise TrainingError(f"{state_path}: its weights {state.learned_net or '(none named)'} are missing")
        learned = beside
    problems = weight_fit_problems(net, learned, require_all=True)
    if problems:
        raise TrainingError(f"{state_path} is not a state of this net: " + "; ".join(problems[:5]))
    learnable = sum(len(blobs) for blobs in net.params.values())
    if len(state.history) not in (0, learnable, 2 * learnable):  # SGD/Nesterov/AdaGrad 1x, Adam/AdaDelta 2x
        raise TrainingError(f"{state_path}: {len(state.history)} history blobs, but the net has {learnable} "
                            "learnable blobs (a state of another net or solver type)")
    if str(learned) != state.learned_net:
        state.learned_net = str(learned.resolve())
        fixed = Path(state_path).with_name(f".{Path(state_path).name}.relinked")
        fixed.write_bytes(state.SerializeToString())
        return fixed
    return Path(state_path)


# --------------------------------------------------------------------------- the log
class CsvLog:
    """``log.csv`` appended row by row (flushed), cut back to ``start_iter`` when a run resumes."""

    def __init__(self, path: Path, columns: Sequence[str], start_iter: int):
        self.path, self.columns = Path(path), list(columns)
        kept = self._rows_before(start_iter) if start_iter and self.path.exists() else []
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.rows: list[dict[str, float]] = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in kept]
        self._stream = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._stream, self.columns, extrasaction="ignore")

    def _rows_before(self, start_iter: int) -> list[dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames != self.columns:
                return []
            return [row for row in reader if row.get("iter", "").isdigit() and int(row["iter"]) <= start_iter]

    def write(self, row: Mapping[str, float]) -> None:
        self._writer.writerow({k: _format(v) for k, v in row.items()})
        self._stream.flush()
        self.rows.append(dict(row))

    def close(self) -> None:
        self._stream.close()


def _format(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def plot_log(rows: Sequence[Mapping[str, float]], loss_columns: Sequence[str], other_columns: Sequence[str],
             path: Path) -> Path | None:
    """Loss curves (log scale) and, below, the validation columns against the iteration; PNG written atomically."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .eval.outputs import save_figure_atomic

    panels = 2 if other_columns else 1
    figure, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), squeeze=False)
    for column, ax, log_scale in ((loss_columns, axes[0][0], True), (other_columns, axes[-1][0], False)):
        if not column:
            continue
        for name in column:
            points = [(r["iter"], r[name]) for r in rows if name in r and math.isfinite(r[name])]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=name, linewidth=1)
        if log_scale and any(r.get(n, 0) > 0 for r in rows for n in column):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_title("training loss")
    if panels == 2:
        axes[1][0].set_title("validation")
    figure.tight_layout()
    saved = save_figure_atomic(figure, path)
    plt.close(figure)
    return saved


# --------------------------------------------------------------------------- the loop
def _python_layers(net: Any) -> list[Any]:
    return [layer for layer in net.layers if hasattr(layer, "set_iteration")]


def _is_finite(values: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` (and check it is a writable folder) before any work starts."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"cannot write to the output folder {out_dir}: {exc.strerror or exc}") from exc
    return out_dir


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler, a shutdown) handled as Ctrl-C while training, so it too ends with a
    snapshot instead of losing the iterations since the last one; the previous handler is put back after.
    Only the main thread can install handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config: TrainConfig, validate: Validator | None = None,
          on_ready: Callable[[Any], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see the module docstring.

    ``on_ready(solver)`` is called once the solver exists and any state is restored, before the first
    step (e.g. to check the data layer against the net). Returns where the final weights and log are.
    """
    from .env import import_caffe
    from .model_files import TRAIN_PHASE, CaffeModelError, probe_net, read_net_prototxt

    caffe = import_caffe()
    import gc
    gc.collect()  # a net of an earlier run still alive in a cycle would share Caffe's DataReader thread and hang this one
    out_dir = prepare_out_dir(config.out_dir)
    param = read_solver(config.solver)
    net_path = train_net_path(Path(config.solver), param)
    try:
        net_param = read_net_prototxt(net_path)
        probe_net(net_path, phase=TRAIN_PHASE, net=net_param)   # a Caffe CHECK fails in a child, not here
    except CaffeModelError as exc:
        raise TrainingError(f"the train net cannot be built: {exc}") from exc
    scratch = out_dir / ".snapshot_scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    run_param = effective_solver(config, param, scratch / "s")
    check_solver_param(run_param, Path(config.solver))
    if run_param.max_iter <= 0:
        raise TrainingError(f"{config.solver}: max_iter must be positive (got {run_param.max_iter})")
    solver_file = write_text_atomic(out_dir / EFFECTIVE_SOLVER, str(run_param))
    if config.seed is not None:
        caffe.set_random_seed(config.seed)
    solver = caffe.get_solver(str(solver_file))
    for weights in config.init_weights:
        problems = weight_fit_problems(solver.net, Path(weights), require_all=False)
        if problems:
            raise TrainingError(f"--init weights do not fit the train net {net_path}: " + "; ".join(problems[:5]))
        solver.net.copy_from(str(weights))
    if config.resume:
        state = check_resumable(Path(config.resume), solver.net)
        solver.restore(str(state))
        if state != Path(config.resume):
            state.unlink(missing_ok=True)
    start = solver.iter
    for layer in _python_layers(solver.net):
        layer.set_iteration(start)
    if on_ready:
        on_ready(solver)
    if start >= run_param.max_iter:
        raise TrainingError(f"nothing to do: the run is at iteration {start}, max_iter is {run_param.max_iter}")

    weights_of = loss_weights(net_param)
    outputs = scalar_outputs(solver.net)
    columns = ["iter", "lr", "loss", *outputs, "samples_per_s", *config.validation_columns]
    log = CsvLog(out_dir / LOG_NAME, columns, start)
    per_iter = batch_size(solver.net, run_param.iter_size)
    snapshot_every = config.snapshot_every or run_param_snapshot(param)
    last_state: Path | None = Path(config.resume) if config.resume else None
    started = time.perf_counter()
    window_start, window_iters = started, 0
    bar = _progress(config.progress, start, run_param.max_iter)
    row: dict[str, float] = {}

    def make_row(iteration: int, values: Mapping[str, float], validation: Mapping[str, float]) -> dict[str, float]:
        nonlocal window_start, window_iters
        now = time.perf_counter()
        made = {"iter": iteration, "lr": learning_rate(run_param, iteration - 1),
                "loss": sum(weights_of.get(k, 0.0) * v for k, v in values.items()), **values,
                "samples_per_s": per_iter * window_iters / max(now - window_start, 1e-9), **validation}
        window_start, window_iters = now, 0
        return made

    def current_values() -> dict[str, float]:
        return {name: float(solver.net.blobs[name].data.flat[0]) for name in outputs}

    with _terminate_as_interrupt():
        try:
            for iteration in range(start + 1, run_param.max_iter + 1):
                solver.step(1)
                window_iters += 1
                values = current_values()
                if not _is_finite(values):
                    bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
                    where = f"resume from the last good snapshot {last_state}" if last_state else "no snapshot was written yet"
                    raise TrainingDiverged(f"loss is not finite at iteration {iteration} ({bad}); {where} "
                                           "with a lower --base-lr")
                validation = dict(validate(solver.net, iteration)) if (
                    validate and config.validate_every and iteration % config.validate_every == 0) else {}
                if iteration % config.log_every == 0 or validation or iteration == run_param.max_iter:
                    row = make_row(iteration, values, validation)
                    log.write(row)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in values or k == "samples_per_s"},
                                    refresh=False)
                bar.update(1)
                if snapshot_every and iteration % snapshot_every == 0 and iteration < run_param.max_iter:
                    last_state = write_snapshot(solver, out_dir, scratch / "s")
        except KeyboardInterrupt:
            # Caffe does not look at signals inside step(): the interrupt lands between iterations, so every
            # finished iteration can be logged and snapshotted.
            bar.close()
            if solver.iter > start and (not log.rows or log.rows[-1]["iter"] < solver.iter):
                values = current_values()
                if _is_finite(values):
                    log.write(make_row(solver.iter, values, {}))
            log.close()
            state = write_snapshot(solver, out_dir, scratch / "s") if solver.iter > start else last_state
            raise TrainingInterrupted(f"interrupted at iteration {solver.iter}; resume with --resume {state}", state) from None
        except BaseException:
            bar.close()
            log.close()
            raise
    bar.close()
    log.close()
    final_state = write_snapshot(solver, out_dir, scratch / "s")
    shutil.rmtree(scratch, ignore_errors=True)
    loss_columns = ["loss", *[c for c in outputs if weights_of.get(c, 0.0) > 0 and c != "loss"]]
    plot = plot_log(log.rows, loss_columns, list(config.validation_columns), out_dir / PLOT_NAME)
    return TrainResult(solver.iter, final_state.with_suffix(".caffemodel"), log.path, plot, row,
                       time.perf_counter() - started)


def run_param_snapshot(param: Any) -> int:
    """Snapshot interval: the solver's ``snapshot`` when set, else every 1000 iterations."""
    return int(param.snapshot) if param.snapshot > 0 else 1000


def _progress(enabled: bool, start: int, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="it", disable=not enabled, dynamic_ncols=True)
