"""Detectron's proposal recall on hand-computed cases."""

import json

import numpy as np
import pytest

from tfdet.evaluation import proposals_recall as pr


def test_iou_uses_plus_one():
  # 10x10 (+1) boxes offset by 5: inter 6*11 = 66, union 121 + 121 - 66 = 176.
  iou = pr.box_iou([[5, 0, 15, 10]], [[0, 0, 10, 10]], convention="detectron")
  assert iou[0, 0] == pytest.approx(66 / 176)
  assert pr.box_iou([[5, 0, 15, 10]], [[0, 0, 10, 10]], convention="modern")[0, 0] == \
      pytest.approx(50 / 150)


def test_greedy_matching_is_one_to_one():
  gt = [[0, 0, 9, 9], [100, 100, 109, 109]]
  # One proposal equals gt 0; a second covers gt 0 at IoU 0.5 exactly and gt 1 not at all.
  proposals = [[0, 0, 9, 9], [0, 0, 19, 4]]  # 20x5 = 100: inter 50, union 150 -> 1/3
  recorded = pr.matched_overlaps(np.array(proposals, float), np.array(gt, float),
                                 convention="detectron")
  np.testing.assert_allclose(recorded, [1.0, 0.0])  # gt 1 only gets what is left: nothing


def test_two_gt_sharing_one_best_proposal():
  # Both gt boxes cover the best proposal P0 most, (+1) areas: A 10x10 = 100, B 10x21 = 210,
  # P0 10x15 = 150 (inside both), P1 10x6 = 60 (inside both):
  #   IoU(P0, A) = 100 / 150 = 2/3   IoU(P0, B) = 150 / 210 = 5/7
  #   IoU(P1, A) = 60 / 100 = 0.6    IoU(P1, B) = 60 / 210 = 2/7
  gt = np.array([[0, 0, 9, 9], [0, 0, 9, 20]], float)
  proposals = np.array([[0, 0, 9, 14], [0, 0, 9, 5]], float)
  np.testing.assert_allclose(pr.box_iou(proposals, gt, convention="detectron"),
                             [[2 / 3, 5 / 7], [0.6, 2 / 7]])
  # Greedy: the best pair (P0, B) = 5/7 is recorded first; P0 is then taken, so A gets
  # P1 (0.6), not its own best P0 (2/3, what a many-to-one match would give).
  recorded = pr.matched_overlaps(proposals, gt, convention="detectron")
  np.testing.assert_allclose(recorded, [5 / 7, 0.6])
  # The proposal order does not matter for the matching, only the IoUs do.
  np.testing.assert_allclose(pr.matched_overlaps(proposals[::-1], gt, convention="detectron"),
                             [5 / 7, 0.6])
  # With P0 alone, min(1, 2) = 1 round: B takes it and A is left with 0.
  np.testing.assert_allclose(pr.matched_overlaps(proposals[:1], gt, convention="detectron"),
                             [5 / 7, 0.0])
  # Recall at IoU 0.65: B (5/7 = 0.714) counts, A (0.6) does not -> 1/2 (2/3 would pass).
  images = [{"proposals": proposals, "gt_boxes": gt, "gt_areas": np.array([100.0, 210.0])}]
  assert pr.proposal_recall(images, thresholds=[0.65],
                            convention="detectron")["recalls"][0] == 0.5


def test_recall_over_thresholds_and_areas():
  gt = np.array([[0, 0, 9, 9], [0, 0, 99, 99]], float)
  areas = np.array([100.0, 10000.0])  # small and large
  # Proposal 0 covers the large box at IoU 0.81 (90x90 of 100x100); proposal 1 the small exactly.
  proposals = np.array([[0, 0, 89, 89], [0, 0, 9, 9]], float)
  images = [{"proposals": proposals, "gt_boxes": gt, "gt_areas": areas}]
  all_ = pr.proposal_recall(images, convention="detectron")
  # thresholds 0.5..0.8 (7 values) recall 1, 0.85..0.95 (3) recall 1/2
  assert all_["num_pos"] == 2
  np.testing.assert_allclose(all_["recalls"], [1.0] * 7 + [0.5] * 3)
  assert all_["ar"] == pytest.approx(0.85)
  assert pr.proposal_recall(images, area="small", convention="detectron")["ar"] == 1.0
  assert pr.proposal_recall(images, area="large", convention="detectron")["ar"] == \
      pytest.approx(0.7)
  assert pr.proposal_recall(images, area="medium", convention="detectron")["num_pos"] == 0
  # limit=1 keeps proposal 0 only: the small box is missed.
  one = pr.proposal_recall(images, limit=1, convention="detectron")
  np.testing.assert_allclose(one["recalls"], [0.5] * 7 + [0.0] * 3)
  metrics = pr.proposal_metrics(images, limits=(1, 100), convention="detectron")
  assert metrics["AR@1"] == pytest.approx(0.35) and metrics["AR@100"] == pytest.approx(0.85)
  assert set(metrics) == {f"{p}@{n}" for p in ("AR", "ARs", "ARm", "ARl") for n in (1, 100)}


def test_image_without_proposals_counts_its_gt():
  images = [{"proposals": np.zeros((0, 4)), "gt_boxes": np.array([[0, 0, 9, 9]], float),
             "gt_areas": np.array([100.0])},
            {"proposals": np.array([[0, 0, 9, 9]], float),
             "gt_boxes": np.array([[0, 0, 9, 9]], float), "gt_areas": np.array([100.0])}]
  assert pr.proposal_recall(images, convention="detectron")["ar"] == 0.5


def test_evaluation_scores_the_proposal_file_as_detectron_reads_it(tmp_path, synthetic_data):
  # Detectron's test_net writes the RPN's proposals to a file and scores what its roidb reads
  # back: clipped, duplicates removed, sides of 2 px or less dropped. One 100x100 image, gt
  # A [10, 10, 49, 49], B [60, 60, 79, 79] and a 2x2 C [5, 80, 6, 81]; proposals in score
  # order A, A again, C, B. Raw, the top 2 are A twice (AR@2 = 1/3); read back they are A
  # and B (AR@2 = 2/3), and C's exact proposal is gone (AR@3 2/3 either way).
  from data_prep import add_proposals
  from tfdet.data import keys
  from tfdet.evaluation import runner
  from tfdet.modeling.detectors import outputs as out

  gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
        "categories": [{"id": 1, "name": "person"}], "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": bbox, "area": area,
             "iscrowd": 0}
            for i, (bbox, area) in enumerate([([10, 10, 40, 40], 1600.0),
                                              ([60, 60, 20, 20], 400.0),
                                              ([5, 80, 2, 2], 4.0)])]}
  (tmp_path / "gt.json").write_text(json.dumps(gt))
  a, b, c = [10, 10, 49, 49], [60, 60, 79, 79], [5, 80, 6, 81]
  proposals = np.array([[a, a, c, b]], np.float32) * 2.0  # image scale 2
  scores = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32)

  def run(model, dataset, *, class_to_category, convention):
    del model, dataset
    results = runner.new_results()
    runner.collect_batch(results, {out.PROPOSALS: proposals, out.PROPOSAL_SCORES: scores,
                                   out.NUM_PROPOSALS: np.array([4])},
                         np.array([1]), np.array([[200, 200, 2.0, 100, 100]], np.float32),
                         class_to_category=class_to_category, convention=convention)
    return results

  metrics = runner.evaluate(None, [{keys.IMAGE_ID: np.array([1])}],
                            annotations_file=str(tmp_path / "gt.json"),
                            label_map_file=synthetic_data["label_map"]["instances"],
                            output_dir=str(tmp_path / "eval"), convention="detectron",
                            proposal_limits=(2, 3), run_fn=run)
  assert metrics["proposals/AR@2"] == pytest.approx(2 / 3)
  assert metrics["proposals/AR@3"] == pytest.approx(2 / 3)
  raw = pr.proposal_metrics([{"proposals": proposals[0] / 2.0, "gt_boxes": np.array([a, b, c]),
                              "gt_areas": np.array([1600.0, 400.0, 4.0])}],
                            limits=(2, 3), convention="detectron")
  assert raw["AR@2"] == pytest.approx(1 / 3) and raw["AR@3"] == pytest.approx(2 / 3)
  # The file is the raw proposals in original pixels, in the format add_proposals reads.
  written = add_proposals.load_proposals(str(tmp_path / "eval" / runner.PROPOSALS_FILE))
  assert list(written) == [1]
  np.testing.assert_array_equal(written[1][0], proposals[0] / 2.0)
  np.testing.assert_array_equal(written[1][1], scores[0])


def test_to_file_boxes_is_the_inclusive_convention():
  boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
  np.testing.assert_array_equal(pr.to_file_boxes(boxes, "detectron"), boxes)
  np.testing.assert_array_equal(pr.to_file_boxes(boxes, "modern"), [[10.0, 20.0, 29.0, 39.0]])
