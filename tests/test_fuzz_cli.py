"""A fast subset of the CLI fuzz harness (bench/fuzz_cli.py): the same case definitions, real CLIs in
subprocesses with a timeout and a memory limit. No abort, no traceback, no runaway, no silent wrong result.

``ENABLED`` holds a sample of every CLI's cases (evaluators, detect, demo, SSD detect, merge-bn, generators,
interruptions); ``FULL_RUN_ONLY`` names more that pass but are kept out of ``make test`` for time. Run all
of them (290+) with ``python bench/fuzz_cli.py``; the counts of the last run are in ``bench/RESULTS.md``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


HARNESS = Path(__file__).resolve().parents[1] / "bench" / "fuzz_cli.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_cli", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_cli"] = module
    spec.loader.exec_module(module)
    return module


fuzz = load_harness()

ENABLED = [
    # evaluators: bad ground truth -> INCOMPLETE exit 2, empty inputs and unusable paths -> clear errors
    "eval-wider-gt-count-too-large", "eval-wider-gt-negative-size", "eval-wider-gt-empty", "eval-wider-gt-garbage",
    "eval-wider-gt-mat-corrupt", "eval-wider-pred-empty-folder", "eval-wider-out-below-file",
    "eval-wider-out-json-is-folder", "eval-wider-subset-unknown-only", "eval-fddb-ellipse-huge-radius",
    "eval-fddb-dets-empty", "eval-fddb-fold-number-missing", "eval-fddb-folds-empty-file",
    "eval-landmarks-pred-empty", "eval-landmarks-min-iou-negative", "eval-landmarks-gt-xml-malformed",
    "ssd-eval-set-empty", "ssd-eval-pred-empty-folder", "ssd-eval-labels-empty", "ssd-eval-xml-nan-box",
    # ssd-mobilenet create-data: a bad XML skipped and named, a missing set list refused
    "ssd-create-data-xml-malformed", "ssd-create-data-set-missing",
    # cross-CLI: argument and command errors of every entry point
    "unknown-command", "ssd-unknown-command", "doctor-unknown-option", "demo-no-args", "gen12-jobs-text",
    # detect / demo / merge-bn / generators: Caffe aborts, bad numbers, empty inputs, Ctrl-C
    "detect-list-empty", "detect-interrupt", "demo-interrupt", "merge-bn-undefined-bottom",
    "merge-bn-runs-negative", "merge-bn-image-scale-nan", "gen12-interrupt", "genlm-list-empty",
    "imdb-data-empty-folder",
    # ssd-mobilenet detect / SSD demo: SSD heads that do not fit the priors (a Caffe abort), a bad image in a batch
    "ssd-detect-heads-priors-mismatch", "ssd-detect-ok-and-bad", "demo-ssd-corrupt-image",
    # ssd-mobilenet convert-depthwise: a layer whose input channels cannot be traced
    "convert-depthwise-channels-untraceable",
    # ssd-mobilenet detect-faces / train-faces: a head that does not fit its priors, a bad model description,
    # a WIDER line count past the end of the file (skipped and named, training goes on)
    "detect-faces-prototxt-head-mismatch", "detect-faces-model-json-landmark-variance-NaN",
    "train-faces-anno-count-too-large",
]
FULL_RUN_ONLY = [
    "detect-png-header-50000x50000", "detect-weights-garbage-caffemodel", "merge-bn-input-dim-zero",
    "merge-bn-out-model-below-file", "gen12-anno-empty", "merge-bn-tolerance-negative",
    "ssd-detect-interrupt", "ssd-detect-weights-truncated", "ssd-detect-loc-head-mismatch",
    "detect-faces-interrupt", "detect-faces-weights-truncated", "train-faces-interrupt", "train-faces-size-100",
]


def test_case_lists_name_existing_cases():
    ids = {c.id for c in fuzz.build_cases()}
    assert len(ids) >= 150
    assert set(ENABLED) <= ids and set(FULL_RUN_ONLY) <= ids


def test_classification_of_outcomes():
    assert fuzz.classify(-6, "F0101 Check failed", False) == "abort"
    assert fuzz.classify(134, "", False) == "abort"
    assert fuzz.classify(1, "Traceback (most recent call last):\n  ...", False) == "traceback"
    assert fuzz.classify(None, "", True) == "runaway"
    assert fuzz.classify(1, "MemoryError", False) == "runaway"
    assert fuzz.classify(2, "error: --out x: is a file; give a folder", False) == "clean-error"
    assert fuzz.classify(2, "", False) == "unclear-error"
    assert fuzz.classify(0, "", False) == "accepted"


def test_fast_subset_has_no_failures():
    by_id = {c.id: c for c in fuzz.build_cases()}
    results = fuzz.run_cases([by_id[i] for i in ENABLED], jobs=2, progress=False)
    failures = [f"{r.id}: expected {r.expect}, got {r.outcome} (rc {r.rc}) -> {r.verdict}\n{r.stderr_tail}"
                for r in results if r.verdict != "pass"]
    assert not failures, "\n".join(failures)
