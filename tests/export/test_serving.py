"""Export a tiny Mask R-CNN and check the SavedModel in a fresh process without tfdet.

The fresh process never imports tfdet nor loads its op library: it lists the
op type of every node of every function of the SavedModel (none may be a
Tfdet op, all must be registered in stock TensorFlow), runs the three
signatures and writes their outputs, which are compared here with the
in-process model (same weights) on the same image.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export import fresh_process, tiny
from tfdet.data import keys, schema, transforms
from tfdet.export import serving
from tfdet.modeling.detectors import outputs as out

_OPS = """
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

sm = saved_model_pb2.SavedModel()
with open(export_dir + "/saved_model.pb", "rb") as f:
  sm.ParseFromString(f.read())
ops = set()
for meta in sm.meta_graphs:
  ops |= {n.op for n in meta.graph_def.node}
  for fn in meta.graph_def.library.function:
    ops |= {n.op for n in fn.node_def}
functions = {fn.signature.name for m in sm.meta_graphs for fn in m.graph_def.library.function}
ops -= functions  # calls of the SavedModel's own functions
unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
"""
_REPORT = 'ops=sorted(ops), unregistered=unregistered, signatures=sorted(loaded.signatures)'

OUTPUT_KEYS = (out.DETECTION_BOXES, out.DETECTION_SCORES, out.DETECTION_CLASSES,
               out.NUM_DETECTIONS, out.DETECTION_MASKS, serving.IMAGE_INFO)


def _batch(image, scale, max_size):
  """The eval preprocessing, assembled here from tfdet.data.transforms."""
  h, w = image.shape[:2]
  im_scale = transforms.compute_scale(h, w, scale=scale, max_size=max_size)
  size = transforms.resized_size(h, w, im_scale).numpy()
  resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
  padded = transforms.pad_image(transforms.normalize_image(resized),
                                transforms.round_up(size[0], 32), transforms.round_up(size[1], 32))
  info = tf.constant([[size[0], size[1], float(im_scale), h, w]], tf.float32)
  return {keys.IMAGES: padded[None], keys.IMAGE_INFO: info}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  tf.keras.utils.set_random_seed(0)
  tmp = tmp_path_factory.mktemp("export")
  model = tiny.tiny_model()
  export_dir = str(tmp / "saved_model")
  serving.export_saved_model(model, export_dir, **tiny.PREPROCESSING)
  image = np.random.default_rng(0).integers(0, 255, size=(80, 120, 3), dtype=np.uint8)
  report, served = fresh_process.run_signatures(export_dir, image, tmp, prelude=_OPS,
                                                report=_REPORT)
  return model, image, export_dir, report, served


def test_graph_has_only_stock_ops(exported):
  _, _, _, report, _ = exported
  assert not report["tfdet_imported"]
  assert report["ops"] and not report["unregistered"], report["unregistered"]
  assert not [op for op in report["ops"] if op.lower().startswith("tfdet")]
  assert {"serving_default", "serving_bytes", "serving_tf_example"} <= set(report["signatures"])


def test_serving_matches_in_process_model(exported):
  model, image, _, _, served = exported
  expected = model(_batch(image, **tiny.PREPROCESSING), training=False)
  n = int(expected[out.NUM_DETECTIONS][0])
  assert n > 0
  got = {k: served[f"serving_default/{k}"][0] for k in OUTPUT_KEYS}
  assert int(got[out.NUM_DETECTIONS]) == n
  np.testing.assert_allclose(got[out.DETECTION_BOXES][:n], expected[out.DETECTION_BOXES][0, :n],
                             atol=1e-2)
  np.testing.assert_allclose(got[out.DETECTION_SCORES][:n],
                             expected[out.DETECTION_SCORES][0, :n], atol=1e-4)
  np.testing.assert_array_equal(got[out.DETECTION_CLASSES][:n],
                                expected[out.DETECTION_CLASSES][0, :n])
  np.testing.assert_allclose(got[out.DETECTION_MASKS][:n], expected[out.DETECTION_MASKS][0, :n],
                             atol=1e-3)
  np.testing.assert_allclose(got[serving.IMAGE_INFO], [96, 144, 1.2, 80, 120], rtol=1e-6)
  # Boxes are in original pixels.
  assert got[out.DETECTION_BOXES][:n, 2].max() <= 120 and got[out.DETECTION_BOXES].min() >= 0


def test_bytes_and_tf_example_signatures_agree(exported):
  _, _, _, _, served = exported
  for name in (serving.BYTES_SIGNATURE, serving.TF_EXAMPLE_SIGNATURE):
    for key in OUTPUT_KEYS:
      np.testing.assert_allclose(served[f"{name}/{key}"], served[f"serving_default/{key}"],
                                 atol=1e-5, err_msg=f"{name}/{key}")
  assert schema.IMAGE_ENCODED == "image/encoded"  # the key the fresh process wrote


def test_saved_model_cli_shows_it(exported):
  _, _, export_dir, _, _ = exported
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  proc = subprocess.run([cli, "show", "--dir", export_dir, "--all"], capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "serving_bytes" in proc.stdout and "detection_masks" in proc.stdout


def test_custom_model_refuses_export(tmp_path):
  model = tiny.tiny_model(implementation="custom")
  with pytest.raises(ValueError, match="reference"):
    serving.export_saved_model(model, str(tmp_path))
