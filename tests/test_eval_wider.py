"""WIDER FACE evaluator: official protocol on hand-computed cases, .mat/.txt ground truth,
bad prediction files, the CLI, and the shared train subset."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mtcnn_caffe.cli import main
from mtcnn_caffe.evaluation import EvaluationError, ProblemLog
from mtcnn_caffe.evaluation.wider import (
    WiderGroundTruth,
    WiderGtImage,
    evaluate_wider,
    load_wider_ground_truth,
    match_image,
    parse_prediction_file,
    read_wider_predictions,
)


def make_gt(images: dict[str, list], keep: dict[str, dict[str, list[int]]] | None = None) -> WiderGroundTruth:
    """Ground truth with a single setting ``all`` (or the given keep lists, 0-based)."""
    items = []
    for key, boxes in images.items():
        event, name = key.split("/")
        boxes = np.array(boxes, dtype=float).reshape(-1, 4)
        masks = {"all": np.ones(len(boxes), bool)}
        if keep is not None:
            masks = {}
            for setting, lists in keep.items():
                mask = np.zeros(len(boxes), bool)
                mask[lists[key]] = True
                masks[setting] = mask
        items.append(WiderGtImage(event, name, boxes, masks))
    return WiderGroundTruth(items, tuple(items[0].keep), "test")


def preds(rows) -> np.ndarray:
    return np.array(rows, dtype=float).reshape(-1, 5)


def write_pred(root, key, rows, name_line=None):
    path = root / f"{key}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [name_line or key.split("/")[1], str(len(rows))] + [" ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


A1, A2, B1 = [10, 10, 40, 40], [100, 10, 40, 40], [10, 10, 50, 50]


def test_hand_computed_two_images_known_pr_points():
    gt = make_gt({"e/a": [A1, A2], "e/b": [B1]})
    predictions = {
        "e/a": preds([A1 + [0.9], [300, 300, 20, 20, 0.8]]),  # TP, then a false positive
        "e/b": preds([B1 + [0.7], [11, 11, 50, 50, 0.6]]),  # TP, then a duplicate of the same face
    }
    result = evaluate_wider(gt, predictions).settings["all"]
    # normalised scores 1, 2/3, 1/3, 0 -> (precision, recall) steps of the 4 prefixes
    points = {(round(p, 6), round(r, 6)) for p, r in zip(result.precision, result.recall)}
    assert points == {(1.0, 0.333333), (0.5, 0.333333), (0.666667, 0.666667), (0.5, 0.666667)}
    assert result.faces == 3
    assert result.ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3, abs=1e-12)  # 5/9


def test_duplicate_ranked_before_a_true_positive_is_a_false_positive():
    gt = make_gt({"e/a": [A1, A2]})
    predictions = {"e/a": preds([A1 + [0.9], [11, 10, 40, 40, 0.8], A2 + [0.7]])}
    # prefixes: P=1 R=.5 | P=.5 R=.5 | P=2/3 R=1  -> AP = .5*1 + .5*2/3
    assert evaluate_wider(gt, predictions).settings["all"].ap == pytest.approx(0.5 + 1 / 3, abs=1e-12)


def test_tied_scores_second_detection_of_a_face_is_false_positive():
    gt = make_gt({"e/a": [A1]})
    problems = ProblemLog()
    result = evaluate_wider(gt, {"e/a": preds([A1 + [0.5], [10, 11, 40, 40, 0.5]])}, problems)
    assert result.settings["all"].ap == pytest.approx(0.5)
    assert any("same score" in n for n in problems.notes)


def test_no_fall_back_to_second_best_face():
    """The official code assigns a prediction to its max-IoU face even if already recalled."""
    gt_boxes = np.array([[0, 0, 100, 100], [30, 0, 100, 100]], float)
    second = np.array([[10, 0, 100, 100, 0.5]])
    from caffe_common.boxes import iou_matrix

    xyxy = lambda b: np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])
    ious = iou_matrix(xyxy(second), xyxy(gt_boxes), pixel_offset=1)[0]
    assert ious[0] > ious[1] >= 0.5  # the second prediction also overlaps face 2 enough
    pred = np.vstack([[0, 0, 100, 100, 0.9], second])
    is_proposal, recalled = match_image(pred, gt_boxes, np.array([True, True]))
    assert is_proposal.tolist() == [True, True]
    assert recalled.tolist() == [1, 1]  # face 2 is never recalled


def test_prediction_on_ignored_face_is_neither_tp_nor_fp():
    gt = make_gt({"e/a": [A1, A2]}, keep={"hard": {"e/a": [0]}})
    predictions = {"e/a": preds([A2 + [0.9], [300, 300, 20, 20, 0.8], A1 + [0.5]])}
    result = evaluate_wider(gt, predictions).settings["hard"]
    assert result.faces == 1
    # normalised 1, .75, 0: ignored (no proposal) | FP: P=0 R=0 | TP: P=1/2 R=1
    assert result.ap == pytest.approx(0.5, abs=1e-12)


def test_perfect_and_empty_predictions_and_score_scale_invariance():
    gt = make_gt({"e/a": [A1, A2], "e/b": [B1]})
    perfect = {"e/a": preds([A1 + [0.3], A2 + [0.8]]), "e/b": preds([B1 + [0.55]])}
    assert evaluate_wider(gt, perfect).settings["all"].ap == 1.0
    assert evaluate_wider(gt, {}).settings["all"].ap == 0.0
    assert evaluate_wider(gt, {"e/a": preds([]), "e/b": preds([])}).settings["all"].ap == 0.0
    mixed = {"e/a": preds([A1 + [0.9], [300, 300, 20, 20, 0.8]]), "e/b": preds([B1 + [0.7], [11, 11, 50, 50, 0.6]])}
    logits = {k: np.column_stack([v[:, :4], v[:, 4] * 37 - 12]) for k, v in mixed.items()}
    assert evaluate_wider(gt, logits).settings["all"].ap == pytest.approx(evaluate_wider(gt, mixed).settings["all"].ap, abs=1e-12)


# --------------------------------------------------------------------------- .mat ground truth
def cell(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_official_mats(folder, events: dict[str, dict[str, list]], keep: dict[str, dict[str, list[int]]]):
    """The official layout: wider_face_val.mat + wider_<setting>_val.mat (1-based keep indices)."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    names = list(events)
    scipy.io.savemat(folder / "wider_face_val.mat", {
        "event_list": cell([np.array([e]) for e in names]),
        "file_list": cell([cell([np.array([f]) for f in events[e]]) for e in names]),
        "face_bbx_list": cell([cell([np.array(b, float).reshape(-1, 4) for b in events[e].values()]) for e in names]),
    })
    for setting, lists in keep.items():
        gt_list = cell([cell([np.array(lists[f"{e}/{f}"], float).reshape(-1, 1) for f in events[e]]) for e in names])
        scipy.io.savemat(folder / f"wider_{setting}_val.mat", {"gt_list": gt_list})


EVENTS = {"0--Parade": {"0_Parade_1": [A1, A2], "0_Parade_2": [B1]}, "1--Handshaking": {"1_Hand_1": [A2]}}
KEEP = {
    "easy": {"0--Parade/0_Parade_1": [1], "0--Parade/0_Parade_2": [], "1--Handshaking/1_Hand_1": [1]},
    "medium": {"0--Parade/0_Parade_1": [1, 2], "0--Parade/0_Parade_2": [1], "1--Handshaking/1_Hand_1": [1]},
    "hard": {"0--Parade/0_Parade_1": [1, 2], "0--Parade/0_Parade_2": [1], "1--Handshaking/1_Hand_1": [1]},
}


def test_official_mat_files_are_read(tmp_path):
    write_official_mats(tmp_path / "gt", EVENTS, KEEP)
    gt = load_wider_ground_truth(tmp_path / "gt")
    assert gt.settings == ("easy", "medium", "hard")
    assert [im.key for im in gt.images] == ["0--Parade/0_Parade_1", "0--Parade/0_Parade_2", "1--Handshaking/1_Hand_1"]
    np.testing.assert_array_equal(gt.images[0].boxes, [A1, A2])
    assert gt.images[0].keep["easy"].tolist() == [True, False]
    assert gt.images[1].keep["easy"].tolist() == [False]


def test_ground_truth_folder_resolution(tmp_path):
    write_official_mats(tmp_path / "gt", EVENTS, KEEP)
    assert load_wider_ground_truth(tmp_path / "gt" / "wider_face_val.mat").settings == ("easy", "medium", "hard")
    # a wider_face_split-like folder: a .mat without setting files and two text files is ambiguous
    split = tmp_path / "split"
    split.mkdir()
    (tmp_path / "gt" / "wider_face_val.mat").rename(split / "wider_face_val.mat")
    for name in ("wider_face_train_bbx_gt.txt", "wider_face_val_bbx_gt.txt"):
        (split / name).write_text("e/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(EvaluationError, match="wider_face_train_bbx_gt.txt, wider_face_val_bbx_gt.txt"):
        load_wider_ground_truth(split)
    assert load_wider_ground_truth(split / "wider_face_val_bbx_gt.txt").settings == ("all",)


def test_mat_keep_index_out_of_range_is_an_error(tmp_path):
    bad = {s: dict(v) for s, v in KEEP.items()}
    bad["hard"]["0--Parade/0_Parade_2"] = [2]  # only 1 face
    write_official_mats(tmp_path / "gt", EVENTS, bad)
    with pytest.raises(EvaluationError, match=r"wider_hard_val\.mat.*0--Parade/0_Parade_2"):
        load_wider_ground_truth(tmp_path / "gt")


def test_cli_official_layout_prints_easy_medium_hard(tmp_path, capsys):
    write_official_mats(tmp_path / "gt", EVENTS, KEEP)
    pred = tmp_path / "pred"
    write_pred(pred, "0--Parade/0_Parade_1", [A1 + [0.9], A2 + [0.8]])
    write_pred(pred, "0--Parade/0_Parade_2", [[300, 300, 20, 20, 0.7]])  # false positive
    write_pred(pred, "1--Handshaking/1_Hand_1", [A2 + [0.75]])
    assert main(["eval", "wider", "--pred", str(pred), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"easy \d\.\d{4} medium \d\.\d{4} hard \d\.\d{4}", line)
    summary = json.loads((tmp_path / "out" / "wider.json").read_text())
    # easy keeps 2 faces, both found before the FP (A2 of image 1 is ignored) -> AP 1;
    # medium keeps 4: three found with precision 1, B1 never -> AP 3/4
    assert summary["ap"]["easy"] == pytest.approx(1.0)
    assert summary["ap"]["medium"] == pytest.approx(0.75)
    assert line == f"easy {summary['ap']['easy']:.4f} medium {summary['ap']['medium']:.4f} hard {summary['ap']['hard']:.4f}"
    assert (tmp_path / "out" / "wider_pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_subset_restricts_both_sides(tmp_path, capsys):
    write_official_mats(tmp_path / "gt", EVENTS, KEEP)
    pred = tmp_path / "pred"
    write_pred(pred, "0--Parade/0_Parade_1", [A1 + [0.9], A2 + [0.8]])
    write_pred(pred, "1--Handshaking/1_Hand_1", [[300, 300, 20, 20, 0.95]])  # outside the subset
    subset = tmp_path / "subset.txt"
    subset.write_text("0--Parade/0_Parade_1.jpg\n")
    rc = main(["eval", "wider", "--pred", str(pred), "--gt", str(tmp_path / "gt"), "--subset", str(subset),
               "--out", str(tmp_path / "out")])
    assert rc == 0
    assert capsys.readouterr().out.strip() == "easy 1.0000 medium 1.0000 hard 1.0000"
    summary = json.loads((tmp_path / "out" / "wider.json").read_text())
    assert summary["images"] == 1 and summary["problems"] == []
    assert any("outside --subset" in n for n in summary["notes"])


# --------------------------------------------------------------------------- bad input
def test_bad_prediction_lines_are_reported_with_file_and_line(tmp_path):
    path = write_pred(tmp_path, "e/a", [A1 + [0.9], [1, 2, 3], [5, 5, 10, 10, float("nan")], [5, 5, -3, 10, 0.4],
                                        A2 + [0.5]])
    problems = ProblemLog()
    boxes = parse_prediction_file(path, problems)
    np.testing.assert_array_equal(boxes, [A1 + [0.9], A2 + [0.5]])
    assert [m.split(": ")[0] for m in problems.problems] == [f"{path}:4", f"{path}:5", f"{path}:6"]
    assert "expected 5 numbers" in problems.problems[0]
    assert "non-finite" in problems.problems[1]
    assert "negative size" in problems.problems[2]
    with pytest.raises(EvaluationError, match=rf"{re.escape(str(path))}:4"):
        parse_prediction_file(path, ProblemLog(strict=True))


def test_bad_count_and_unknown_image_are_reported(tmp_path):
    gt = make_gt({"e/a": [A1], "e/b": [B1]})
    pred = tmp_path / "pred"
    write_pred(pred, "e/a", [A1 + [0.9]])
    (pred / "e" / "a.txt").write_text("a\nthree\n1 2 3 4 0.5\n")
    write_pred(pred, "e/zzz", [A1 + [0.9]])
    problems = ProblemLog()
    result = read_wider_predictions(pred, gt, problems)
    assert any("zzz.txt" in m and "not in the ground truth" in m for m in problems.problems)
    assert any(m.startswith(f"{pred / 'e' / 'a.txt'}:2") for m in problems.problems)
    assert result.missing == ["e/b"] and any("no prediction file" in n for n in problems.notes)
    with pytest.raises(EvaluationError):
        read_wider_predictions(pred, gt, ProblemLog(strict=True))


def test_cli_error_exit_status_for_missing_gt(tmp_path, capsys):
    assert main(["eval", "wider", "--pred", str(tmp_path), "--gt", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- shared train subset
def test_shared_wider_subset_perfect_and_half(shared_dir, tmp_path, capsys):
    gt_txt = shared_dir / "data/wider_train_subset/wider_face_split/wider_face_train_bbx_gt.txt"
    gt = load_wider_ground_truth(gt_txt)
    assert gt.settings == ("all",) and len(gt.images) == 1239
    rng = np.random.default_rng(1)
    pred, half = tmp_path / "pred", tmp_path / "half"
    kept_valid = total_valid = 0
    for image in gt.images:
        scores = rng.random(len(image.boxes))
        rows = [list(b) + [s] for b, s in zip(image.boxes, scores)]
        write_pred(pred, image.key, rows)
        keep_rows = [r for i, r in enumerate(rows) if i % 2 == 0]
        write_pred(half, image.key, keep_rows)
        kept_valid += int(image.keep["all"][::2].sum())
        total_valid += int(image.keep["all"].sum())
    assert main(["eval", "wider", "--pred", str(pred), "--gt", str(gt_txt.parent), "--out", str(tmp_path / "o1")]) == 0
    assert capsys.readouterr().out.strip() == "all 1.0000"
    assert main(["eval", "wider", "--pred", str(half), "--gt", str(gt_txt), "--out", str(tmp_path / "o2")]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "o2" / "wider.json").read_text())
    # precision stays 1 (every prediction is a distinct face), recall tops at kept/total: AP = kept/total
    assert summary["ap"]["all"] == pytest.approx(kept_valid / total_valid, abs=1e-12)


# --------------------------------------------------------------------------- literal MATLAB transcription
def matlab_style_ap(gt: WiderGroundTruth, predictions: dict[str, np.ndarray], setting: str) -> float:
    """Loop-by-loop transcription of wider_eval's evaluation (independent of the vectorised code)."""
    all_scores = np.concatenate([p[:, 4] for p in predictions.values()])
    low, high = all_scores.min(), all_scores.max()
    org = np.zeros((1000, 2))
    count_face = 0
    for image in gt.images:
        pred = predictions[image.key]
        pred = pred[np.argsort(-pred[:, 4], kind="stable")].copy()
        pred[:, 4] = (pred[:, 4] - low) / (high - low)
        keep = image.keep[setting]
        count_face += int(keep.sum())
        if len(image.boxes) == 0 or len(pred) == 0:
            continue
        recall_list = np.zeros(len(image.boxes))
        proposal_list = np.ones(len(pred))
        pred_recall = np.zeros(len(pred))
        g = image.boxes.copy()
        g[:, 2:] += g[:, :2]
        for h in range(len(pred)):
            b = pred[h, :4].copy()
            b[2:] += b[:2]
            best_ov, best = -1.0, -1
            for k in range(len(g)):
                w = min(g[k, 2], b[2]) - max(g[k, 0], b[0]) + 1
                hh = min(g[k, 3], b[3]) - max(g[k, 1], b[1]) + 1
                ov = 0.0
                if w > 0 and hh > 0:
                    inter = w * hh
                    ov = inter / ((g[k, 2] - g[k, 0] + 1) * (g[k, 3] - g[k, 1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)
                if ov > best_ov:
                    best_ov, best = ov, k
            if best_ov >= 0.5:
                if not keep[best]:
                    recall_list[best] = -1
                    proposal_list[h] = -1
                elif recall_list[best] == 0:
                    recall_list[best] = 1
            pred_recall[h] = np.sum(recall_list == 1)
        for t in range(1, 1001):
            thresh = 1 - t / 1000
            idx = np.flatnonzero(pred[:, 4] >= thresh)
            if len(idx):
                r = idx[-1]
                org[t - 1, 0] += np.sum(proposal_list[: r + 1] == 1)
                org[t - 1, 1] += pred_recall[r]
    with np.errstate(divide="ignore", invalid="ignore"):
        prec, rec = org[:, 1] / org[:, 0], org[:, 1] / count_face
    mrec = np.concatenate(([0], rec, [1]))
    mpre = np.concatenate(([0], prec, [0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.nanmax([mpre[i], mpre[i + 1]])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def test_vectorised_evaluation_equals_literal_transcription():
    rng = np.random.default_rng(7)
    images, keep, predictions = {}, {"easy": {}, "hard": {}}, {}
    for i in range(12):
        key = f"e{i % 3}/img{i}"
        faces = np.column_stack([rng.uniform(0, 400, (6, 2)), rng.uniform(8, 80, (6, 2))]).round(1)
        images[key] = faces.tolist()
        keep["hard"][key] = [k for k in range(6) if rng.random() < 0.8]
        keep["easy"][key] = [k for k in keep["hard"][key] if rng.random() < 0.5]
        near = faces[rng.random(6) < 0.7] + rng.normal(0, 3, (1, 4))
        near = np.vstack([near, near[:1]]) if len(near) else near  # a duplicate detection
        noise = np.column_stack([rng.uniform(0, 400, (4, 2)), rng.uniform(8, 80, (4, 2))])
        boxes = np.vstack([near, noise])
        boxes[:, 2:] = np.abs(boxes[:, 2:])
        predictions[key] = np.column_stack([boxes, rng.choice([0.2, 0.5, 0.7, 0.9, 0.95], len(boxes))])
    gt = make_gt(images, keep)
    result = evaluate_wider(gt, predictions)
    for setting in ("easy", "hard"):
        assert result.settings[setting].ap == pytest.approx(matlab_style_ap(gt, predictions, setting), abs=1e-12)
        assert 0.05 < result.settings[setting].ap < 0.95
