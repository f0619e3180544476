"""COCO result dicts (`coco.detections_to_coco`) by hand: the box width rule of each
convention, category ids, scores, and masks that survive the RLE round trip."""

import numpy as np
import pytest
from pycocotools import mask as mask_util

from tfdet.evaluation import coco

BOXES = np.array([[10.0, 20.0, 29.0, 24.0],  # 20 x 5 pixels in Detectron's inclusive rule
                  [0.5, 1.25, 3.5, 9.75],
                  [7.0, 7.0, 8.0, 8.0]], np.float32)  # a padding row (num = 2)
SCORES = np.array([0.875, 0.25, 0.5], np.float32)
CLASSES = np.array([2, 1, 1])
LABEL_MAP = {1: 7, 2: 11}  # contiguous class -> data set category id


@pytest.mark.parametrize("convention,expected_bboxes", [
    # detectron: w = x2 - x1 + 1, h = y2 - y1 + 1: 29 - 10 + 1 = 20, 24 - 20 + 1 = 5;
    # 3.5 - 0.5 + 1 = 4, 9.75 - 1.25 + 1 = 9.5.
    ("detectron", [[10.0, 20.0, 20.0, 5.0], [0.5, 1.25, 4.0, 9.5]]),
    # modern: w = x2 - x1, h = y2 - y1: 19, 4; 3, 8.5.
    ("modern", [[10.0, 20.0, 19.0, 4.0], [0.5, 1.25, 3.0, 8.5]]),
])
def test_box_width_rule_of_each_convention(convention, expected_bboxes):
  results = coco.detections_to_coco(42, BOXES, SCORES, CLASSES, 2,
                                    class_to_category=LABEL_MAP, convention=convention)
  assert len(results) == 2  # rows past num are padding
  assert [r["bbox"] for r in results] == expected_bboxes
  assert [r["image_id"] for r in results] == [42, 42]
  assert [r["category_id"] for r in results] == [11, 7]  # classes 2, 1 through the label map
  assert [r["score"] for r in results] == [0.875, 0.25]
  for r in results:
    assert "segmentation" not in r
    assert type(r["image_id"]) is int and type(r["category_id"]) is int
    assert type(r["score"]) is float and all(type(v) is float for v in r["bbox"])


def test_unknown_convention_is_rejected():
  with pytest.raises(ValueError, match="convention"):
    coco.detections_to_coco(1, BOXES, SCORES, CLASSES, 1, class_to_category=LABEL_MAP,
                            convention="legacy")


def test_masks_round_trip_through_rle():
  rng = np.random.default_rng(0)
  masks = np.zeros((3, 7, 9), np.uint8)
  masks[0, 1:4, 2:8] = 1  # a rectangle
  masks[1] = rng.integers(0, 2, (7, 9))  # noise: many runs, in both directions
  masks[1, :, 0] = 1  # a run across the column (COCO's RLE is column-major)
  # masks[2] stays empty
  results = coco.detections_to_coco(3, np.tile(BOXES[:1], (3, 1)), SCORES, [1, 2, 1], 3,
                                    class_to_category=LABEL_MAP, convention="detectron",
                                    masks=masks)
  assert len(results) == 3
  for r, mask in zip(results, masks, strict=True):
    rle = r["segmentation"]
    assert rle["size"] == [7, 9]  # [height, width]
    assert isinstance(rle["counts"], str)  # json-ready, not bytes
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    np.testing.assert_array_equal(decoded, mask)
    assert mask_util.area(rle) == mask.sum()
  # The rectangle's RLE by hand: column-major, starting with a zero run. Columns 0-1 are
  # empty (2 * 7 = 14 zeros), then each of columns 2..7 holds rows 1-3 (3 ones) between a
  # leading and trailing zero run: 14 + 1 = 15 zeros, 3 ones, then (3 + 1) = 4 zeros and 3
  # ones five more times, then 3 trailing zeros of column 7 and column 8's 7: 10 zeros.
  counts = mask_util.frPyObjects(
      {"size": [7, 9], "counts": [15, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4, 3, 10]}, 7, 9)
  np.testing.assert_array_equal(mask_util.decode(counts), masks[0])
  assert results[0]["segmentation"]["counts"] == counts["counts"].decode("ascii")
