"""The export and infer command lines on a tiny Mask R-CNN checkpoint and two demo images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import testdata
from tests.export import tiny
from tfdet import visualization
from tfdet.export import serving

DEMO = testdata.DEMO_IMAGES_DIR
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = tiny.tiny_gin(num_classes=3)
LABEL_MAP = {"classes": {"1": {"category_id": 3, "name": "cat"},
                         "2": {"category_id": 7, "name": "dog"}}}


def _run(module, *args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("infer")
  tf.keras.utils.set_random_seed(0)
  model = tiny.tiny_model(implementation="custom")
  model_dir = tmp / "model"
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(5, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(model_dir), max_to_keep=1).save()
  (tmp / "tiny.gin").write_text(GIN)
  (tmp / "label_map.json").write_text(json.dumps(LABEL_MAP))
  images = tmp / "images"
  images.mkdir()
  names = sorted(f for f in os.listdir(DEMO) if f.endswith(".jpg"))[:2]
  for name in names:  # downscaled to ~128 px
    image = tf.io.decode_jpeg(tf.io.read_file(os.path.join(DEMO, name)))
    small = tf.cast(tf.image.resize(image, [96, 128], antialias=True), tf.uint8)
    suffix = ".png" if name == names[1] else ".jpg"
    visualization.encode_image(small.numpy(), str(images / (name[:-4] + suffix)))
  return tmp, names


def _check_outputs(out_dir, names):
  files = sorted(os.listdir(out_dir))
  assert "results.json" in files
  assert {f"{names[0][:-4]}.jpg", f"{names[1][:-4]}.png"} <= set(files)
  drawn = tf.io.decode_image(tf.io.read_file(os.path.join(out_dir, f"{names[1][:-4]}.png")))
  assert drawn.shape == (96, 128, 3)
  with open(os.path.join(out_dir, "results.json")) as f:
    results = json.load(f)
  assert results and {r["image_id"] for r in results} <= {0, 1}
  assert {r["category_id"] for r in results} <= {3, 7}
  assert all(r["score"] >= 0.05 and "segmentation" in r for r in results)
  # Each result names its input: file_name (unique here: the inputs' own) and the path given.
  images = os.path.join(os.path.dirname(out_dir), "images")
  assert all(r["path"] == os.path.join(images, r["file_name"]) for r in results)
  # A complete run: exactly its images and results.json (no errors.json, no partial folder).
  assert set(files) == {f"{names[0][:-4]}.jpg", f"{names[1][:-4]}.png", "results.json"}
  assert not [f for f in os.listdir(os.path.dirname(out_dir)) if ".partial-" in f]
  return results


def test_export_then_infer_with_saved_model_and_with_checkpoint(setup):
  tmp, names = setup
  export_dir = str(tmp / "export" / "1")
  _run("tfdet.export", f"--gin_file={tmp / 'tiny.gin'}", f"--model_dir={tmp / 'model'}",
       f"--export_dir={export_dir}", "--scale=96", "--max_size=160")
  assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
  # The canvas multiple is the config's; the convention travels with the export.
  assert serving.read_export_info(export_dir) == {
      "convention": "detectron", "scale": 96, "max_size": 160, "size_divisibility": 32}
  common = [f"--input={tmp / 'images'}", "--score_threshold=0.05",
            f"--label_map={tmp / 'label_map.json'}"]
  _run("tfdet.infer", f"--saved_model={export_dir}", f"--output_dir={tmp / 'out_sm'}", *common)
  from_saved = _check_outputs(str(tmp / "out_sm"), names)
  _run("tfdet.infer", f"--gin_file={tmp / 'tiny.gin'}", f"--model_dir={tmp / 'model'}",
       "--scale=96", "--max_size=160", f"--output_dir={tmp / 'out_ckpt'}", *common)
  from_ckpt = _check_outputs(str(tmp / "out_ckpt"), names)
  # Exported (reference ops) and in-process (custom ops) models agree.
  assert len(from_saved) == len(from_ckpt)
  np.testing.assert_allclose([r["bbox"] for r in from_saved], [r["bbox"] for r in from_ckpt],
                             atol=0.05)


def test_draw_detections_paints_box_label_and_mask():
  image = np.zeros((40, 60, 3), np.uint8)
  mask = np.zeros((1, 40, 60), np.uint8)
  mask[0, 20:30, 20:30] = 1
  drawn = visualization.draw_detections(image, np.array([[10, 12, 50, 35]], float),
                                        np.array([1]), np.array([0.9]), masks=mask,
                                        class_names={1: "ab"}, score_threshold=0.5)
  color = visualization.class_color(1)
  np.testing.assert_array_equal(drawn[35, 30], color)  # bottom edge
  np.testing.assert_array_equal(drawn[25, 25], (0.4 * color).astype(np.uint8))  # blended mask
  assert drawn[0:12, 10:40].any()  # the label above the box
  assert not drawn[38:, :5].any()
  skipped = visualization.draw_detections(image, np.array([[10, 12, 50, 35]], float),
                                          np.array([1]), np.array([0.1]))
  assert not skipped.any()
