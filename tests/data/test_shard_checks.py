"""The pipeline's checks of its input: files that are not TFRecord shards, unfinished or changed
conversions (the converter's manifest), and training input that can never yield a batch."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep import coco_annotations as anns
from data_prep import coco_to_tfrecord as c2t
from data_prep import shard_writer
from tests.data_prep.conftest import save_json, tiny_coco
from tfdet.data import keys, pipeline, schema, shard_files

SMALL = dict(scales=(32,), max_size=64, size_divisibility=16, max_instances=4,
             max_polygon_vertices=8, num_parallel_calls=1, cycle_length=2, prefetch=1)


def _record(image_id, *, boxes=(), crowd=(), keypoints=None):
  """A 20x30 PNG record; ``boxes`` xywh, ``crowd`` flags, ``keypoints`` [n, 51] or None."""
  n = len(boxes)
  crowd = list(crowd) or [0] * n
  return schema.make_example(
      encoded_image=tf.io.encode_png(np.zeros([20, 30, 3], np.uint8)).numpy(),
      image_format="png", image_id=image_id, filename=f"{image_id}.png", height=20, width=30,
      boxes_xywh=[list(b) for b in boxes], classes=[1] * n, category_ids=[1] * n,
      is_crowd=crowd, areas=[10.0] * n, annotation_ids=list(range(n)),
      polygons=[[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3]]] for b in boxes],
      rles=[b""] * n, keypoints=keypoints).SerializeToString()


def _write(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return str(path)


def test_masked_crc_matches_tensorflow_record_headers(tmp_path):
  for size in (0, 1, 300, 70000, 1 << 24):
    path = _write(tmp_path / f"r{size}.tfrecord", [b"x" * size])
    with open(path, "rb") as f:
      head = f.read(12)
    assert int.from_bytes(head[:8], "little") == size
    assert shard_files.masked_crc32c(head[:8]) == int.from_bytes(head[8:], "little")
  assert shard_files.masked_crc32c(b"\0" * 8) != shard_files.masked_crc32c(b"\1" + b"\0" * 7)


def test_files_that_are_not_shards_are_named(tmp_path):
  good = _write(tmp_path / "val-00000-of-00001.tfrecord", [_record(1, boxes=[(2, 3, 10, 6)])])
  assert shard_files.list_files(str(tmp_path / "val-*")) == [good]
  bad = {
      "val-manifest.json": b'{"fingerprint": "abc", "shards": {}}',
      "val-empty.tfrecord": b"",
      "val-notes.txt": b"hello, not a record file at all",
      "val-short": b"\x05\0\0",
      "val-00001-of-00002.tfrecord.tmp-77": open(good, "rb").read(),  # valid records, unfinished
  }
  for name, content in bad.items():
    with open(tmp_path / name, "wb") as f:
      f.write(content)
  os.mkdir(tmp_path / "val-dir")
  with pytest.raises(ValueError) as err:
    shard_files.list_files(str(tmp_path / "val-*"))
  message = str(err.value)
  assert "'" + str(tmp_path / "val-*") + "' matches 6 file(s) that are not TFRecord shards" in message
  for name, why in [("val-manifest.json", "manifest of an older tfdet converter"),
                    ("val-empty.tfrecord", "is empty (0 bytes)"),
                    ("val-notes.txt", "does not start with a TFRecord header"),
                    ("val-short", "does not start with a TFRecord header"),
                    ("val-00001-of-00002.tfrecord.tmp-77", "is the temporary file of a conversion"),
                    ("val-dir", "is a directory")]:
    (line,) = [ln for ln in message.splitlines() if ln.strip().startswith(f"{tmp_path / name} ")]
    assert why in line
  assert good + " " not in message
  # build_dataset refuses before tf.data reads anything ("corrupted record at 0", no file named).
  with pytest.raises(ValueError, match="val-notes.txt does not start with a TFRecord header"):
    pipeline.build_dataset(str(tmp_path / "val-*"), mode="eval", batch_size=1, **SMALL)


def test_unfinished_conversion_is_refused_naming_the_missing_shards(tmp_path, monkeypatch):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=6)
  os.remove(os.path.join(image_dir, data["images"][4]["file_name"]))  # shard 2 of 3 fails
  out = str(tmp_path / "out")
  with pytest.raises(anns.BadInputError):
    c2t.convert_coco(path, image_dir, out, num_shards=3, prefix="train")
  pattern = os.path.join(out, "train-*")
  assert len(tf.io.gfile.glob(pattern)) == 2  # 4 of 6 images: what training read silently
  with pytest.raises(ValueError) as err:
    shard_files.list_files(pattern)
  message = str(err.value)
  assert "unfinished conversion" in message and "manifest-train.json" in message
  assert "lists 2 of 3 shards as written; missing: train-00002-of-00003.tfrecord" in message
  with pytest.raises(ValueError, match="missing: train-00002-of-00003.tfrecord"):
    pipeline.build_dataset(pattern, mode="train", batch_size=1, **SMALL)
  monkeypatch.chdir(out)  # a relative pattern: the manifest is found in the current folder
  with pytest.raises(ValueError, match="'train-\\*' matches shards of an unfinished conversion"):
    shard_files.list_files("train-*")

  # Finished (the missing image skipped), the set is read; every image is there but the bad one.
  c2t.convert_coco(path, image_dir, out, num_shards=3, prefix="train", skip_bad_annotations=True)
  ds = pipeline.build_dataset(pattern, mode="eval", batch_size=1, pad_final_batch=False, **SMALL)
  assert sorted(int(b[keys.IMAGE_ID][0]) for b in ds) == [10, 11, 12, 13, 15]


def test_changed_and_stray_shards_are_refused(tmp_path):
  path, image_dir, _ = tiny_coco(str(tmp_path / "src"), num_images=4)
  out = str(tmp_path / "out")
  c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train")
  pattern = os.path.join(out, "train-*")
  shard0, shard1 = shard_files.list_files(pattern)
  stray = os.path.join(out, "train-00000-of-00005.tfrecord")  # from an earlier conversion
  shutil.copy(shard0, stray)
  with pytest.raises(ValueError, match="train-00000-of-00005.tfrecord .* which manifest-train.json "
                                       "does not list among its 2 shards"):
    shard_files.list_files(pattern)
  assert shard_files.list_files(os.path.join(out, "train-*-of-00002.tfrecord")) == [shard0, shard1]
  os.remove(stray)
  size = os.path.getsize(shard1)
  with open(shard1, "ab") as f:
    f.write(open(shard0, "rb").read())  # still a valid TFRecord file, but not the one converted
  with pytest.raises(ValueError, match=f"{shard1}: {os.path.getsize(shard1)} bytes, but .*"
                                       f"manifest-train.json recorded {size}"):
    shard_files.list_files(pattern)


def test_empty_shards_the_manifest_lists_are_read(tmp_path):
  path, image_dir, _ = tiny_coco(str(tmp_path / "src"), num_images=2)
  out = str(tmp_path / "out")
  c2t.convert_coco(path, image_dir, out, num_shards=3, prefix="val")
  files = shard_files.list_files(os.path.join(out, "val-*"))
  assert [os.path.getsize(f) == 0 for f in files] == [False, False, True]
  ds = pipeline.build_dataset(os.path.join(out, "val-*"), mode="eval", batch_size=1,
                              pad_final_batch=False, **SMALL)
  assert sorted(int(b[keys.IMAGE_ID][0]) for b in ds) == [10, 11]
  with open(shard_writer.manifest_path(out, "val"), "w") as f:
    f.write("{not json")
  with pytest.raises(ValueError, match="manifest-val.json: unreadable converter manifest"):
    shard_files.list_files(os.path.join(out, "val-*"))


def _train(pattern, **kwargs):
  return pipeline.build_dataset(pattern, mode="train", batch_size=2, seed=0, shuffle_buffer=1,
                                **{**SMALL, **kwargs})


def test_training_input_that_yields_no_batch_is_refused(tmp_path):
  visible = [[0.0] * 51]
  visible[0][15:18] = [4.0, 5.0, 2.0]
  empty = _write(tmp_path / "empty.tfrecord", [_record(1), _record(2)])
  crowd = _write(tmp_path / "crowd.tfrecord", [_record(3, boxes=[(1, 1, 8, 8)], crowd=[1])])
  degenerate = _write(tmp_path / "degenerate.tfrecord",  # a box of width 0 is no instance
                      [_record(4, boxes=[(5, 5, 0, 6)])])
  plain = _write(tmp_path / "plain.tfrecord", [_record(5, boxes=[(2, 3, 10, 6)])])
  people = _write(tmp_path / "people.tfrecord",
                  [_record(6, boxes=[(2, 3, 10, 6)], keypoints=visible)])
  crowd_people = _write(tmp_path / "crowd_people.tfrecord",
                        [_record(7, boxes=[(2, 3, 10, 6)], crowd=[1], keypoints=visible)])

  for files in ([empty], [empty, crowd, degenerate]):
    with pytest.raises(ValueError) as err:
      _train(files)
    message = str(err.value)
    assert repr(files) in message and "training would wait forever for its first batch" in message
    assert f"none of its {2 if len(files) == 1 else 4} images has a usable instance" in message
    assert "filter_empty=True" in message
  with pytest.raises(ValueError, match="none of its 1 images has an instance with visible "
                                       "keypoints .keypoints_only=True"):
    _train(plain, keypoints_only=True)
  with pytest.raises(ValueError, match=r"has both a usable instance .* and visible keypoints "
                                       r"\(1 have the first, 1 the second; 0 both\)"):
    _train([plain, crowd_people], keypoints_only=True)

  # Proposals give an image without instances a foreground RoI (Detectron keeps it).
  proposals = tf.train.Example.FromString(_record(8))
  proposals.features.feature[schema.PROPOSAL_BOXES].float_list.value.extend([1, 2, 10, 12])
  with_props = _write(tmp_path / "props.tfrecord", [proposals.SerializeToString()])
  assert next(iter(_train(with_props, with_proposals=True)))[keys.IMAGE_ID].numpy().tolist() == [8, 8]
  with pytest.raises(ValueError, match=r"usable instance \(a non-crowd box of positive size and "
                                       r"area, or a proposal\)"):
    _train(empty, with_proposals=True)

  # Inputs that can yield batches build as before; eval and filter_empty=False keep everything.
  assert next(iter(_train([empty, plain])))[keys.IMAGE_ID].numpy().tolist() == [5, 5]
  assert next(iter(_train(people, keypoints_only=True)))[keys.IMAGE_ID].numpy().tolist() == [6, 6]
  assert sorted(next(iter(_train(empty, filter_empty=False)))[keys.IMAGE_ID].numpy().tolist()) == [1, 2]
  ds = pipeline.build_dataset(empty, mode="eval", batch_size=2, **SMALL)
  assert next(iter(ds))[keys.IMAGE_ID].numpy().tolist() == [1, 2]


def test_each_input_pipeline_is_checked(tmp_path):
  _write(tmp_path / "d-0.tfrecord", [_record(1, boxes=[(2, 3, 10, 6)])])
  _write(tmp_path / "d-1.tfrecord", [_record(2)])
  pattern = str(tmp_path / "d-*")
  ctx = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                    num_replicas_in_sync=2) for i in range(2)]
  assert next(iter(_train(pattern, input_context=ctx[0])))[keys.IMAGE_ID].numpy().tolist() == [1, 1]
  with pytest.raises(ValueError, match=r"d-\*' \(input pipeline 1 of 2\): training would wait "
                                       r"forever .* none of its 1 images has a usable instance"):
    _train(pattern, input_context=ctx[1])


def test_converted_set_whose_images_were_all_skipped_has_no_records(tmp_path):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=2)
  for image in data["images"]:
    os.remove(os.path.join(image_dir, image["file_name"]))
  out = str(tmp_path / "out")
  summary = c2t.convert_coco(path, image_dir, out, num_shards=2, prefix="train",
                             skip_bad_annotations=True)
  assert summary["images"] == 0 and summary["skipped"] == {anns.SKIP_BAD_IMAGE: 2}
  pattern = os.path.join(out, "train-*")
  with pytest.raises(ValueError, match="training would wait forever for its first batch: its "
                                       "files hold no records"):
    _train(pattern, filter_empty=False)
  with open(shard_writer.manifest_path(out, "train")) as f:
    manifest = json.load(f)
  assert [s["file_name"] for info in manifest["shards"].values()
          for s in info["skipped_images"]] == [im["file_name"] for im in data["images"]]
  save_json(os.path.join(out, "unrelated.json"), {})  # not matched by the pattern: ignored
  with open(os.path.join(out, "manifest-other.json"), "w") as f:
    f.write("not json")  # the manifest of other shards (other-*) is not read
  assert len(shard_files.list_files(pattern)) == 2
