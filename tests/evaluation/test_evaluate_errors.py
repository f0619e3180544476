"""evaluate with an annotations json that does not match the shards: a clear error naming both
and the missing image ids, before the model runs (command line) or before anything is written
(`runner.evaluate`)."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import app

from tests import shared_data
from tests.export import tiny
from tfdet import evaluate
from tfdet.data import pipeline
from tfdet.evaluation import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = dict(scales=(96,), max_size=160, max_instances=16, max_polygon_vertices=64)


def _without_images(annotations_file, drop, path):
  """Writes the COCO json of `annotations_file` without the images `drop` (and their annotations)."""
  with open(annotations_file) as f:
    data = json.load(f)
  data["images"] = [i for i in data["images"] if i["id"] not in drop]
  data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in drop]
  path.write_text(json.dumps(data))
  return str(path)


def test_shard_image_ids_are_the_annotations_images(synthetic_data):
  ids = runner.shard_image_ids(synthetic_data["instances"]["val"])
  assert len(ids) == shared_data.SYNTHETIC["num_val_images"] == len(set(ids))
  annotated = runner.annotation_image_ids(synthetic_data["annotations"]["val"]["instances"])
  assert sorted(ids) == sorted(annotated)
  # One shard: its own records only.
  first = runner.shard_image_ids(shared_data.first_shard(synthetic_data["instances"]["val"]))
  assert len(first) == 2 and set(first) < set(ids)


def test_check_image_ids_names_the_file_the_source_and_the_missing_ids(tmp_path):
  runner.check_image_ids([3, 1, 3], [1, 2, 3], annotations_file="gt.json", source="shards")
  with pytest.raises(ValueError, match=r"^gt.json has no image with id 4, 9: 2 of the 3 images "
                                       r"of the shards val-\* are missing from it"):
    runner.check_image_ids([9, 1, 4], [1, 2], annotations_file="gt.json",
                           source="the shards val-*")
  with pytest.raises(ValueError, match=r"id 100, 101, 102 and 7 more: 10 of the 10 images"):
    runner.check_image_ids(range(100, 110), [1], annotations_file="gt.json", source="s",
                           show=3)
  with pytest.raises(ValueError, match="the shards x has no images to evaluate"):
    runner.check_image_ids([], [1], annotations_file="gt.json", source="the shards x")
  (tmp_path / "list.json").write_text("[]")
  with pytest.raises(ValueError, match=f"{tmp_path / 'list.json'} is not a COCO annotations"):
    runner.annotation_image_ids(str(tmp_path / "list.json"))
  (tmp_path / "cut.json").write_text('{"images": [')
  with pytest.raises(ValueError, match=f"{tmp_path / 'cut.json'} is not valid json"):
    runner.annotation_image_ids(str(tmp_path / "cut.json"))


def test_evaluate_with_missing_images_raises_before_writing_anything(synthetic_data, tmp_path):
  shard = shared_data.first_shard(synthetic_data["instances"]["val"])
  ids = runner.shard_image_ids(shard)
  annotations = _without_images(synthetic_data["annotations"]["val"]["instances"], {ids[1]},
                                tmp_path / "gt.json")
  tf.keras.utils.set_random_seed(0)
  model = tiny.tiny_model(num_classes=8, implementation="custom")
  dataset = pipeline.build_dataset(shard, mode="eval", batch_size=2, **DATA)
  label_map = synthetic_data["label_map"]["instances"]
  # The model runs once; every evaluate below gets its detections (evaluate's checks
  # come after the run function and before any file is written).
  collected = runner.run_model(model, dataset, convention="detectron",
                               class_to_category=runner.load_label_map(label_map)[0])

  def run_fn(*args, **kwargs):
    del args, kwargs
    return collected

  common = dict(label_map_file=label_map, convention="detectron", run_fn=run_fn)
  out = tmp_path / "eval"
  with pytest.raises(ValueError, match=f"{annotations} has no image with id {ids[1]}: 1 of the 2 "
                                       "images of the evaluated data set"):
    runner.evaluate(model, dataset, annotations_file=annotations, output_dir=str(out), **common)
  assert not os.path.exists(out)  # no results json left behind
  # The same holds for a keypoint json (checked before any results are written too) ...
  matching = synthetic_data["annotations"]["val"]["instances"]
  kp = _without_images(synthetic_data["annotations"]["val"]["person_keypoints"], {ids[0]},
                       tmp_path / "kp.json")
  with pytest.raises(ValueError, match=f"{kp} has no image with id {ids[0]}"):
    runner.evaluate(model, dataset, annotations_file=matching, keypoint_annotations_file=kp,
                    output_dir=str(out), **common)
  assert not os.path.exists(out)
  # ... and for a keypoint json given for a model without keypoints.
  with pytest.raises(ValueError, match="no keypoints"):
    runner.evaluate(model, dataset, annotations_file=matching, output_dir=str(out),
                    keypoint_annotations_file=synthetic_data["annotations"]["val"][
                        "person_keypoints"], **common)
  assert not os.path.exists(out)


def test_command_line_checks_the_shards_against_the_annotations_first(synthetic_data, tmp_path):
  pattern = synthetic_data["instances"]["val"]
  ids = sorted(runner.shard_image_ids(pattern))
  annotations = _without_images(synthetic_data["annotations"]["val"]["instances"],
                                set(ids[-2:]), tmp_path / "gt.json")
  tf.keras.utils.set_random_seed(0)
  ckpt = tf.train.Checkpoint(model=tiny.tiny_model(num_classes=8),
                             step=tf.Variable(1, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(tmp_path / "model"), max_to_keep=1).save()
  (tmp_path / "tiny.gin").write_text(tiny.tiny_gin(num_classes=8))
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "tfdet.evaluate", f"--gin_file={tmp_path / 'tiny.gin'}",
       f"--model_dir={tmp_path / 'model'}", f"--file_pattern={pattern}",
       f"--annotations_file={annotations}"],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=240, check=False)
  assert proc.returncode != 0
  assert (f"--annotations_file: {annotations} has no image with id {ids[-2]}, {ids[-1]}: 2 of "
          f"the {len(ids)} images of the shards {pattern} are missing from it") in proc.stderr
  assert "pycocotools" not in proc.stderr and "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "model" / "eval")


def test_shard_check_names_the_flag_of_what_does_not_match(synthetic_data, tmp_path):
  pattern = synthetic_data["instances"]["val"]
  matching = synthetic_data["annotations"]["val"]["instances"]
  first = runner.shard_image_ids(shared_data.first_shard(pattern))[0]
  kp = _without_images(synthetic_data["annotations"]["val"]["person_keypoints"], {first},
                       tmp_path / "kp.json")
  evaluate.check_annotations_match_shards(pattern, {"annotations_file": matching,
                                                    "keypoint_annotations_file": None})
  with pytest.raises(app.UsageError, match=f"--keypoint_annotations_file: {kp} has no image "
                                           f"with id {first}:"):
    evaluate.check_annotations_match_shards(pattern, {"annotations_file": matching,
                                                      "keypoint_annotations_file": kp})
  with pytest.raises(app.UsageError, match=f"--annotations_file: .*{tmp_path / 'none.json'}"):
    evaluate.check_annotations_match_shards(pattern, {"annotations_file":
                                                      str(tmp_path / "none.json")})
  with tf.io.TFRecordWriter(str(tmp_path / "empty-00000-of-00001.tfrecord")):
    pass  # a shard of no records
  with pytest.raises(app.UsageError, match="--file_pattern"):
    evaluate.check_annotations_match_shards(str(tmp_path / "empty-*"),
                                            {"annotations_file": matching})
