"""Converter reliability: non-finite and non-numeric annotations, JPEGs damaged inside their scan
data, reruns after a skipped image was fixed, side-file names, old manifests."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep import coco_annotations as anns
from data_prep import coco_to_tfrecord as c2t
from data_prep import image_files, shard_writer
from tests.data_prep.conftest import SAMPLE_DIR, SAMPLE_JSON, read_records, save_json, tiny_coco
from tfdet.data import schema, shard_files

NAN, INF = float("nan"), float("inf")


def _shards(out, prefix):
  return sorted(glob.glob(os.path.join(out, f"{prefix}-*-of-*.tfrecord")))


@pytest.mark.parametrize("field, value, says", [
    ("bbox", [2.0, NAN, 10.0, 8.0], "bbox must be 4 finite numbers"),
    ("bbox", [2.0, 3.0, INF, 8.0], "bbox must be 4 finite numbers"),
    ("bbox", ["10", "x", 3, 4], "bbox must be 4 finite numbers, got ['10', 'x', 3, 4]"),
    ("bbox", [2.0, None, 10.0, 8.0], "bbox must be 4 finite numbers"),
    ("area", NAN, "area must be a finite number, got nan"),
    ("area", -INF, "area must be a finite number, got -inf"),
    ("area", "80", "area must be a finite number, got '80'"),
    ("segmentation", [[2.0, 3.0, NAN, 3.0, 12.0, 11.0]], "polygon 0 must be a list of finite "
                                                         "numbers: value 2 is nan"),
    ("segmentation", [[2, 3, 12, 3, 12, 11], [1, "x", 5, 5, 1, 5]],
     "polygon 1 must be a list of finite numbers: value 1 is 'x'"),
    ("segmentation", [[2, 3, 12, 3, 12, 11], 7], "polygon 1 must be a list of finite numbers"),
    ("keypoints", [0.0] * 50 + [INF], "keypoints must be finite numbers: value 50 is inf"),
    ("iscrowd", "1", "iscrowd must be 0 or 1"),
    ("id", "101", "id must be an integer"),
    ("segmentation", {"size": [20, 30], "counts": [5, -1]}, "RLE counts must be"),
])
def test_bad_numbers_are_named_or_skipped(tmp_path, field, value, says):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"))
  data["annotations"][1][field] = value
  save_json(path, data)  # json writes NaN / Infinity, which json.load reads back
  out = str(tmp_path / "out")
  with pytest.raises(anns.BadInputError) as err:
    c2t.convert_coco(path, image_dir, out, num_shards=3)
  message = str(err.value)
  assert os.path.basename(path) in message and "annotation 101" in message and says in message
  assert not _shards(out, "instances_tiny")  # refused before anything was written

  summary = c2t.convert_coco(path, image_dir, out, num_shards=3, skip_bad_annotations=True)
  assert summary["skipped"] == {anns.SKIP_BAD_ANNOTATION: 1}
  assert summary["images"] == 3 and summary["instances"] == 2
  assert any("annotation 101" in m and says in m for m in summary["messages"])
  records = read_records(_shards(out, "instances_tiny"))
  assert [list(r[schema.ANNOTATION_ID]) for r in records] == [[100], [], [102]]
  for r in records:
    for key in (schema.BOX_XYWH, schema.AREA, schema.POLYGON_XY, schema.KEYPOINTS):
      assert np.isfinite(r[key]).all()


def test_bad_image_fields_are_named(tmp_path):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"))
  data["images"][2]["height"] = NAN
  save_json(path, data)
  with pytest.raises(anns.BadInputError, match=r"instances_tiny.json: image 12: height must be "
                                               r"a positive integer, got nan"):
    c2t.convert_coco(path, image_dir, str(tmp_path / "out"))


def zero_scan_bytes(data, count=1024):
  """JPEG bytes with ``count`` bytes zeroed in the middle of the first scan's entropy-coded data."""
  sos = data.index(b"\xff\xda")
  start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")  # after the SOS header
  end = data.rindex(b"\xff\xd9")
  middle = (start + end) // 2
  assert end - start > 4 * count
  return data[:middle] + bytes(count) + data[middle + count:]


def _sample_copy(root, count):
  """The first ``count`` sample images (with their annotations) copied under ``root``."""
  with open(SAMPLE_JSON) as f:
    data = json.load(f)
  data["images"] = data["images"][:count]
  ids = {im["id"] for im in data["images"]}
  data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
  image_dir = os.path.join(root, "images")
  os.makedirs(image_dir)
  for im in data["images"]:
    shutil.copy(os.path.join(SAMPLE_DIR, im["file_name"]), image_dir)
  path = os.path.join(root, "person_keypoints_sample.json")
  save_json(path, data)
  return path, image_dir, data


def test_decoder_warning_is_a_corrupt_image(tmp_path):
  good = open(os.path.join(SAMPLE_DIR, "000000040083.jpg"), "rb").read()
  damaged = zero_scan_bytes(good)
  # TensorFlow decodes it without an error (libjpeg only prints a warning): the old check passed.
  assert tf.io.decode_image(damaged, channels=3).shape == (333, 500, 3)
  shape, warnings = image_files.decode_checked(damaged)
  assert shape == (333, 500, 3) and warnings
  assert all(image_files.LIBJPEG_WARNINGS.search(w) for w in warnings)
  assert image_files.decode_checked(good) == ((333, 500, 3), [])

  path, image_dir, data = _sample_copy(str(tmp_path / "src"), 2)
  broken = os.path.join(image_dir, data["images"][1]["file_name"])
  with open(broken, "wb") as f:
    f.write(damaged)
  out = str(tmp_path / "out")
  with pytest.raises(anns.BadInputError) as err:
    c2t.convert_coco(path, image_dir, out, num_shards=2)
  message = str(err.value)
  assert broken in message and "image id 40083" in message and "Corrupt JPEG data" in message
  # Shard 0 (the intact image) was finished before the error and stays.
  assert [os.path.basename(p) for p in _shards(out, "person_keypoints_sample")] == [
      "person_keypoints_sample-00000-of-00002.tfrecord"]

  summary = c2t.convert_coco(path, image_dir, out, num_shards=2, skip_bad_annotations=True)
  assert summary["skipped"] == {anns.SKIP_BAD_IMAGE: 1} and summary["images"] == 1
  assert any("Corrupt JPEG data" in m and broken in m for m in summary["messages"])


def test_rerun_redoes_the_shard_of_a_fixed_image(tmp_path):
  path, image_dir, data = _sample_copy(str(tmp_path / "src"), 4)
  name = data["images"][2]["file_name"]  # shard 1 of 2 holds images 2 and 3
  original = open(os.path.join(image_dir, name), "rb").read()
  with open(os.path.join(image_dir, name), "wb") as f:
    f.write(zero_scan_bytes(original))
  out = str(tmp_path / "out")
  prefix = "person_keypoints_sample"
  summary = c2t.convert_coco(path, image_dir, out, num_shards=2, skip_bad_annotations=True)
  assert summary["images"] == 3 and summary["skipped"] == {anns.SKIP_BAD_IMAGE: 1}
  with open(shard_writer.manifest_path(out, prefix)) as f:
    manifest = json.load(f)
  shard0, shard1 = (shard_writer.shard_name(prefix, i, 2) for i in range(2))
  (skipped,) = manifest["shards"][shard1]["skipped_images"]  # the manifest knows what it skipped
  assert skipped["file_name"] == name and skipped["image_id"] == data["images"][2]["id"]
  assert "Corrupt JPEG data" in skipped["error"]
  assert manifest["shards"][shard0]["skipped_images"] == []

  # A rerun with nothing changed converts nothing.
  for shard in (shard0, shard1):
    os.utime(os.path.join(out, shard), ns=(0, 0))
  c2t.convert_coco(path, image_dir, out, num_shards=2, skip_bad_annotations=True)
  assert all(os.stat(os.path.join(out, s)).st_mtime_ns == 0 for s in (shard0, shard1))

  # The image is fixed, with the damaged file's size and modification time: content decides.
  stat = os.stat(os.path.join(image_dir, name))
  with open(os.path.join(image_dir, name), "wb") as f:
    f.write(original)
  os.utime(os.path.join(image_dir, name), ns=(stat.st_atime_ns, stat.st_mtime_ns))
  summary = c2t.convert_coco(path, image_dir, out, num_shards=2, skip_bad_annotations=True)
  assert summary["images"] == 4 and not summary["skipped"]
  assert os.stat(os.path.join(out, shard0)).st_mtime_ns == 0  # untouched
  assert os.stat(os.path.join(out, shard1)).st_mtime_ns != 0  # converted again
  records = read_records(_shards(out, prefix))
  assert [int(r[schema.IMAGE_ID]) for r in records] == [im["id"] for im in data["images"]]

  # Another image of a finished shard changes (touched): that shard is converted again.
  os.utime(os.path.join(out, shard1), ns=(0, 0))
  os.utime(os.path.join(image_dir, data["images"][0]["file_name"]), ns=(5, 5))
  c2t.convert_coco(path, image_dir, out, num_shards=2, skip_bad_annotations=True)
  assert os.stat(os.path.join(out, shard0)).st_mtime_ns != 0
  assert os.stat(os.path.join(out, shard1)).st_mtime_ns == 0


def test_side_files_stay_out_of_the_shard_pattern(tmp_path):
  path, image_dir, _ = tiny_coco(str(tmp_path / "src"))
  out = str(tmp_path / "out")
  c2t.convert_coco(path, image_dir, out, num_shards=3, prefix="train")
  assert sorted(os.listdir(out)) == [
      schema.LABEL_MAP_FILE, "manifest-train.json", *(f"train-0000{i}-of-00003.tfrecord"
                                                      for i in range(3))]
  assert shard_files.list_files(os.path.join(out, "train-*")) == _shards(out, "train")

  # A shard being written is a hidden temporary file: the shard pattern never matches it.
  target = os.path.join(out, "train-00000-of-00001.tfrecord")
  seen = []

  def records():
    yield b"first"
    seen.append((sorted(glob.glob(os.path.join(out, "train-*-of-00001*"))),
                 sorted(n for n in os.listdir(out) if ".tmp-" in n)))
    yield b"second"

  assert shard_writer.write_shard_atomic(target, records()) == 2
  assert seen == [([], [f".train-00000-of-00001.tfrecord.tmp-{os.getpid()}"])]
  assert [r.numpy() for r in tf.data.TFRecordDataset(target)] == [b"first", b"second"]


def test_old_manifest_is_read_renamed_and_named_by_the_pipeline(tmp_path):
  path, image_dir, _ = tiny_coco(str(tmp_path / "src"), num_images=4)
  out = str(tmp_path / "out")
  c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train")
  # What an older converter left: train-manifest.json without digests or the shard list.
  with open(shard_writer.manifest_path(out, "train")) as f:
    manifest = json.load(f)
  old = {"fingerprint": manifest["fingerprint"], "num_shards": 2,
         "shards": {n: {k: v for k, v in info.items() if k in ("records", "bytes", "stats")}
                    for n, info in manifest["shards"].items()}}
  os.remove(shard_writer.manifest_path(out, "train"))
  save_json(os.path.join(out, "train-manifest.json"), old)
  leftover = os.path.join(out, "train-00001-of-00002.tfrecord.tmp-4242")  # old-style tmp name
  with open(leftover, "wb") as f:
    f.write(b"partial")
  pattern = os.path.join(out, "train-*")
  with pytest.raises(ValueError) as err:
    shard_files.list_files(pattern)
  message = str(err.value)
  assert f"{out}/train-manifest.json does not start with a TFRecord header" in message
  assert "manifest of an older tfdet converter; rerun data_prep.coco_to_tfrecord" in message
  assert f"{leftover} is the temporary file of a conversion" in message

  for shard in _shards(out, "train"):
    os.utime(shard, ns=(0, 0))
  summary = c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train")
  assert summary["images"] == 4
  assert all(os.stat(s).st_mtime_ns == 0 for s in _shards(out, "train"))  # nothing redone
  assert not os.path.exists(os.path.join(out, "train-manifest.json"))
  assert not os.path.exists(leftover)
  with open(shard_writer.manifest_path(out, "train")) as f:
    new = json.load(f)
  assert new["expected_shards"] == [os.path.basename(s) for s in _shards(out, "train")]
  assert all(info["inputs"] for info in new["shards"].values())
  assert shard_files.list_files(pattern) == _shards(out, "train")


def test_old_manifest_that_skipped_images_redoes_those_shards(tmp_path):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=4)
  out = str(tmp_path / "out")
  c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train")
  with open(shard_writer.manifest_path(out, "train")) as f:
    manifest = json.load(f)
  shard1 = shard_writer.shard_name("train", 1, 2)
  for info in manifest["shards"].values():
    del info["inputs"], info["skipped_images"]
  manifest["shards"][shard1]["stats"]["skipped"] = {anns.SKIP_BAD_IMAGE: 1}
  os.remove(shard_writer.manifest_path(out, "train"))
  save_json(os.path.join(out, "train-manifest.json"), manifest)
  for shard in _shards(out, "train"):
    os.utime(shard, ns=(0, 0))
  c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train")
  times = [os.stat(s).st_mtime_ns for s in _shards(out, "train")]
  assert times[0] == 0 and times[1] != 0
  assert len(read_records(_shards(out, "train"))) == len(data["images"])
