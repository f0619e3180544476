"""COCO json -> TFRecord: real sample round trip, RLE, bad input, resume, label map."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from data_prep import coco_annotations as anns
from data_prep import coco_to_tfrecord as c2t
from data_prep import shard_writer
from tests.data_prep.conftest import (
    SAMPLE_DIR,
    SAMPLE_JSON,
    read_records,
    save_json,
    tiny_coco,
    write_jpeg,
)
from tfdet.data import schema


def _shards(out, prefix):
  return sorted(glob.glob(os.path.join(out, f"{prefix}-*-of-*.tfrecord")))


def test_real_sample_round_trip(tmp_path):
  out = str(tmp_path / "out")
  summary = c2t.convert_coco(SAMPLE_JSON, SAMPLE_DIR, out, num_shards=3, prefix="sample")
  with open(SAMPLE_JSON) as f:
    data = json.load(f)
  shards = _shards(out, "sample")
  assert [os.path.basename(p) for p in shards] == [
      f"sample-0000{i}-of-00003.tfrecord" for i in range(3)]
  assert summary["images"] == 4 and summary["instances"] == 14 and not summary["skipped"]
  records = read_records(shards)
  assert [r[schema.IMAGE_ID] for r in records] == [im["id"] for im in data["images"]]
  for rec, image in zip(records, data["images"], strict=True):
    h, w = image["height"], image["width"]
    assert (rec[schema.IMAGE_HEIGHT], rec[schema.IMAGE_WIDTH]) == (h, w)
    assert rec[schema.IMAGE_FILENAME].decode() == image["file_name"]
    assert rec[schema.IMAGE_FORMAT] == b"jpeg"
    assert tf.io.decode_jpeg(rec[schema.IMAGE_ENCODED]).shape == (h, w, 3)
    objs = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    assert list(rec[schema.ANNOTATION_ID]) == [a["id"] for a in objs]
    boxes = []
    for a in objs:
      x, y, bw, bh = a["bbox"]
      x1, y1 = min(max(x, 0), w), min(max(y, 0), h)
      boxes.append([x1, y1, min(x + bw, w) - x1, min(y + bh, h) - y1])
    np.testing.assert_array_equal(rec[schema.BOX_XYWH].reshape(-1, 4),
                                  np.float32(boxes))
    assert list(rec[schema.CLASS]) == [1] * len(objs)
    assert list(rec[schema.CATEGORY_ID]) == [a["category_id"] for a in objs]
    assert list(rec[schema.IS_CROWD]) == [a["iscrowd"] for a in objs]
    np.testing.assert_array_equal(rec[schema.AREA], np.float32([a["area"] for a in objs]))
    polys = [p for a in objs for p in a["segmentation"] if len(p) >= 6]
    assert list(rec[schema.POLYGONS_PER_INSTANCE]) == [
        len([p for p in a["segmentation"] if len(p) >= 6]) for a in objs]
    assert list(rec[schema.POLYGON_LENGTHS]) == [len(p) for p in polys]
    np.testing.assert_array_equal(rec[schema.POLYGON_XY],
                                  np.float32([v for p in polys for v in p]))
    assert list(rec[schema.MASK_RLE]) == [b""] * len(objs)
    np.testing.assert_array_equal(rec[schema.KEYPOINTS],
                                  np.float32([v for a in objs for v in a["keypoints"]]))
    assert rec[schema.PROPOSAL_BOXES].size == 0
  with open(os.path.join(out, schema.LABEL_MAP_FILE)) as f:
    label_map = json.load(f)
  assert label_map["classes"]["1"]["category_id"] == 1
  assert label_map["classes"]["1"]["name"] == "person"
  assert tuple(label_map["keypoint_names"]) == schema.KEYPOINT_NAMES
  assert len(label_map["skeleton"]) == 19


def test_rle_crowd_clipping_and_cleaning(tmp_path):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=2)
  mask = np.zeros((20, 30), np.uint8)
  mask[4:9, 5:15] = 1
  compressed = mask_utils.encode(np.asfortranarray(mask))
  flat = mask.reshape(-1, order="F")
  changes = np.flatnonzero(np.diff(flat)) + 1
  uncompressed_counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  common = {"image_id": 10, "category_id": 3, "area": 50.0, "bbox": [5.0, 4.0, 10.0, 5.0],
            "segmentation": [[5, 4, 15, 4, 15, 9]]}
  data["annotations"] = [
      dict(common, id=1, iscrowd=1, segmentation={"size": [20, 30],
                                                 "counts": compressed["counts"].decode()}),
      dict(common, id=2, iscrowd=0, segmentation={"size": [20, 30],
                                                 "counts": uncompressed_counts}),
      dict(common, id=3, iscrowd=0, bbox=[-4.0, 15.0, 40.0, 10.0],  # leaves the image
           segmentation=[[0, 15, 29, 15, 29, 19], [1, 1, 2, 2]]),  # second polygon too short
      dict(common, id=4, iscrowd=0, segmentation=[[1, 1, 2, 2]]),  # no valid polygon
      dict(common, id=5, iscrowd=0, bbox=[31.0, 2.0, 5.0, 5.0]),  # outside: zero width
      dict(common, id=6, iscrowd=0, area=0.0),  # zero area
  ]  # image 11 has no annotations and is kept
  save_json(path, data)
  out = str(tmp_path / "out")
  summary = c2t.convert_coco(path, image_dir, out)
  assert summary["skipped"] == {anns.SKIP_NO_VALID_POLYGON: 1, anns.SKIP_DEGENERATE_BOX: 2}
  assert summary["images"] == 2 and summary["images_without_instances"] == 1
  assert summary["crowd"] == 1
  rec, empty = read_records(_shards(out, "instances_tiny"))
  assert empty[schema.CLASS].size == 0 and empty[schema.IMAGE_ID] == 11
  assert list(rec[schema.ANNOTATION_ID]) == [1, 2, 3]
  assert list(rec[schema.IS_CROWD]) == [1, 0, 0]
  assert list(rec[schema.CLASS]) == [1, 1, 1]  # category 3 < 7 -> class 1
  assert list(rec[schema.CATEGORY_ID]) == [3, 3, 3]
  assert summary["rle_to_polygons"] == 1  # the non-crowd RLE gets its traced outline too
  assert list(rec[schema.POLYGONS_PER_INSTANCE]) == [0, 1, 1]
  assert list(rec[schema.POLYGON_LENGTHS]) == [8, 6]
  np.testing.assert_array_equal(rec[schema.POLYGON_XY][:8], [5, 4, 15, 4, 15, 9, 5, 9])
  np.testing.assert_array_equal(rec[schema.BOX_XYWH].reshape(-1, 4)[2], [0, 15, 30, 5])
  for rle in rec[schema.MASK_RLE][:2]:  # both RLEs decode to the mask
    decoded = mask_utils.decode({"size": [20, 30], "counts": rle})
    np.testing.assert_array_equal(decoded, mask)
  assert rec[schema.MASK_RLE][2] == b""
  assert rec[schema.KEYPOINTS].size == 0


def _bad_case(case, path, image_dir, data):
  """Breaks the tiny data set in one way; returns the id the error must name."""
  if case == "missing_image":
    os.remove(os.path.join(image_dir, data["images"][1]["file_name"]))
    return "image id 11", data["images"][1]["file_name"]
  if case == "corrupt_jpeg":
    name = os.path.join(image_dir, data["images"][1]["file_name"])
    with open(name, "rb") as f:
      head = f.read(300)
    with open(name, "wb") as f:
      f.write(head)
    return "image id 11", data["images"][1]["file_name"]
  if case == "missing_field":
    del data["annotations"][1]["bbox"]
  elif case == "unknown_category":
    data["annotations"][1]["category_id"] = 99
  elif case == "unknown_image":
    data["annotations"][1]["image_id"] = 999
  save_json(path, data)
  return "annotation 101", os.path.basename(path)


@pytest.mark.parametrize("case", ["missing_image", "corrupt_jpeg", "missing_field",
                                  "unknown_category", "unknown_image"])
def test_bad_input_errors_and_skips(tmp_path, case):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"))
  ident, filename = _bad_case(case, path, image_dir, data)
  out = str(tmp_path / "out")
  with pytest.raises(anns.BadInputError) as err:
    c2t.convert_coco(path, image_dir, out, num_shards=3)
  assert ident in str(err.value) and filename in str(err.value)
  finished = _shards(out, "instances_tiny")
  if case in ("missing_image", "corrupt_jpeg"):  # shard 0 was done before the error: kept
    assert [os.path.basename(p) for p in finished] == ["instances_tiny-00000-of-00003.tfrecord"]
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
  summary = c2t.convert_coco(path, image_dir, out, num_shards=3, skip_bad_annotations=True)
  reason = anns.SKIP_BAD_IMAGE if case in ("missing_image", "corrupt_jpeg") else (
      anns.SKIP_BAD_ANNOTATION)
  assert summary["skipped"] == {reason: 1}
  assert summary["images"] == (2 if reason == anns.SKIP_BAD_IMAGE else 3)
  assert summary["instances"] == 2
  assert any(ident in m for m in summary["messages"])
  if reason == anns.SKIP_BAD_IMAGE:  # the image is put right: its shard is converted again
    write_jpeg(os.path.join(image_dir, data["images"][1]["file_name"]), 20, 30, seed=1)
    summary = c2t.convert_coco(path, image_dir, out, num_shards=3, skip_bad_annotations=True)
    assert summary["skipped"] == {} and summary["images"] == 3 and summary["instances"] == 3
    records = read_records(_shards(out, "instances_tiny"))
    assert [r[schema.IMAGE_ID] for r in records] == [10, 11, 12]


def test_resume_after_interruption_equals_clean_run(tmp_path):
  path, image_dir, _ = tiny_coco(str(tmp_path / "src"), num_images=5)
  clean, resumed = str(tmp_path / "clean"), str(tmp_path / "resumed")
  c2t.convert_coco(path, image_dir, clean, num_shards=3)
  c2t.convert_coco(path, image_dir, resumed, num_shards=3)
  # Interrupt: shard 1 lost with its manifest entry, shard 2 half-written as a .tmp.
  manifest_file = shard_writer.manifest_path(resumed, "instances_tiny")
  assert os.path.basename(manifest_file) == "manifest-instances_tiny.json"  # outside `prefix-*`
  with open(manifest_file) as f:
    manifest = json.load(f)
  for i in (1, 2):
    name = shard_writer.shard_name("instances_tiny", i, 3)
    del manifest["shards"][name]
    os.remove(os.path.join(resumed, name))
  save_json(manifest_file, manifest)
  leftover = os.path.join(resumed, shard_writer.shard_name("instances_tiny", 2, 3) + ".tmp-999")
  with open(leftover, "wb") as f:
    f.write(b"partial")
  shard0 = os.path.join(resumed, shard_writer.shard_name("instances_tiny", 0, 3))
  os.utime(shard0, ns=(0, 0))
  summary = c2t.convert_coco(path, image_dir, resumed, num_shards=3)
  assert os.stat(shard0).st_mtime_ns == 0  # finished shard not rewritten
  assert not os.path.exists(leftover)
  assert summary["images"] == 5 and summary["instances"] == 5
  assert sorted(os.listdir(clean)) == sorted(os.listdir(resumed))
  for name in os.listdir(clean):
    if name.endswith(".tfrecord") or name == schema.LABEL_MAP_FILE:
      with open(os.path.join(clean, name), "rb") as a, open(os.path.join(resumed, name),
                                                             "rb") as b:
        assert a.read() == b.read(), name
  # Changed options redo everything: 2 shards instead of 3, old ones removed.
  c2t.convert_coco(path, image_dir, resumed, num_shards=2)
  assert [os.path.basename(p) for p in _shards(resumed, "instances_tiny")] == [
      "instances_tiny-00000-of-00002.tfrecord", "instances_tiny-00001-of-00002.tfrecord"]
  assert len(read_records(_shards(resumed, "instances_tiny"))) == 5


def test_png_and_size_mismatch(tmp_path):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=2)
  png = os.path.join(image_dir, "p.png")
  tf.io.write_file(png, tf.io.encode_png(np.zeros((20, 30, 3), np.uint8)))
  data["images"][0]["file_name"] = "p.png"
  write_jpeg(os.path.join(image_dir, data["images"][1]["file_name"]), 21, 30)
  save_json(path, data)
  with pytest.raises(anns.BadInputError, match="21x30 but the json says 20x30"):
    c2t.convert_coco(path, image_dir, str(tmp_path / "out"))
  data["images"] = data["images"][:1]
  data["annotations"] = data["annotations"][:1]
  save_json(path, data)
  c2t.convert_coco(path, image_dir, str(tmp_path / "out2"))
  (rec,) = read_records(_shards(str(tmp_path / "out2"), "instances_tiny"))
  assert rec[schema.IMAGE_FORMAT] == b"png"
