"""The detector seam: entry points build what the config names, and the settings every stage
shares (box convention, canvas multiple) reach every stage from one binding."""

import json
import pathlib

import gin
import numpy as np
import pytest

from tfdet import gin_files
from tfdet.data import keys
from tfdet.modeling.detectors import rcnn_losses, spec
from tfdet.training import inputs

REPO = pathlib.Path(__file__).resolve().parent.parent
# Entry points and the evaluation code: they must never name a detector family.
FAMILY_FREE = ["tfdet/train.py", "tfdet/evaluate.py", "tfdet/infer.py", "tfdet/quickstart.py",
               "tfdet/export/__main__.py", "tfdet/export/serving.py",
               "tfdet/evaluation/runner.py", "tfdet/evaluation/tta.py"]
TINY = {"stage_blocks": (1, 1, 1, 1), "width_divisor": 8, "fpn_channels": 32, "mlp_dim": 64}


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize("path", FAMILY_FREE)
def test_entry_points_name_no_family(path):
  text = (REPO / path).read_text()
  for name in ("build_rcnn", "rcnn_losses", "box_head", "mask_head"):
    assert name not in text, (path, name)


def test_the_model_config_names_detector_and_loss_once():
  gin_files.parse(["models/mask_rcnn_fpn.gin"])
  detector = gin_files.detector_spec()
  assert isinstance(detector, spec.DetectorSpec)
  model = detector.build_model(**TINY)
  assert model.convention == "detectron" and model.mask_head is not None
  assert getattr(detector.loss, "__wrapped__", detector.loss) is rcnn_losses.rcnn_losses


def test_no_detector_bound_is_a_clear_error():
  gin_files.parse(["training/detectron_solver.gin"])
  with pytest.raises(ValueError, match="the gin configs name no detector: bind spec.Detector"):
    gin_files.detector_spec()


@pytest.mark.parametrize("files,divisor", [
    (["models/mask_rcnn_fpn.gin"], 32), (["models/mask_rcnn_c4.gin"], 1),
    (["models/rpn_c4.gin"], 1), (["models/faster_rcnn_fpn.gin", "models/rcnn_modern.gin"], 32),
])
def test_one_canvas_multiple_for_inputs_export_and_infer(files, divisor):
  gin_files.parse(files)
  assert gin_files.eval_preprocessing() == {"scale": 800, "max_size": 1333,
                                            "size_divisibility": divisor}
  assert gin_files.bindings(inputs.build_input, scope="train")["size_divisibility"] == divisor
  assert gin_files.eval_preprocessing(size_divisibility=7, scale=None)["size_divisibility"] == 7


def _flipped(annotation, width, scale, offset):
  """A COCO [x, y, w, h] box flipped in an image `width` wide, in a convention, scaled.

  Modern x2 = x + w flips to W - x; Detectron's x2 = x + w - 1 to W - 1 - x.
  """
  x, y, w, h = annotation["bbox"]
  return np.array([width - x - w, y, width - offset - x, y + h - offset]) * scale


def _flipped_training_boxes(files, data):
  """One training batch of every image flipped (the gin-bound train input), and the json."""
  gin_files.parse(files, [f'train/inputs.build_input.file_pattern = "{data["instances"]["train"]}"',
                          "train/inputs.build_input.flip_probability = 1.0",
                          "train/inputs.build_input.scales = (150,)"])
  with gin.config_scope("train"):
    dataset = gin.get_configurable(inputs.build_input)(batch_size=4, seed=0, deterministic=True)
  batch = next(iter(dataset))
  with open(data["annotations"]["train"]["instances"]) as f:
    coco = json.load(f)
  return batch, coco


@pytest.mark.parametrize("files,convention", [
    (["models/mask_rcnn_fpn.gin"], "detectron"),
    (["models/mask_rcnn_fpn.gin", "models/rcnn_modern.gin"], "modern"),
])
def test_the_model_trains_on_boxes_flipped_in_its_own_convention(files, convention,
                                                                 synthetic_data):
  batch, coco = _flipped_training_boxes(files, synthetic_data)
  model = gin_files.detector_spec().build(**TINY)
  assert model.convention == convention
  offset = 1.0 if convention == "detectron" else 0.0
  other = 1.0 - offset
  checked = 0
  for i, image_id in enumerate(batch[keys.IMAGE_ID].numpy()):
    info = batch[keys.IMAGE_INFO][i].numpy()
    scale, width = float(info[2]), float(info[4])
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
    valid = batch[keys.GT_VALID][i].numpy() & ~batch[keys.GT_IS_CROWD][i].numpy().astype(bool)
    for box in batch[keys.GT_BOXES][i].numpy()[valid]:
      errors = [np.abs(box - _flipped(a, width, scale, offset)).max() for a in anns]
      best = anns[int(np.argmin(errors))]
      assert min(errors) < 1e-3, (box, _flipped(best, width, scale, offset))
      # The other convention's flip is a pixel (times the scale) away at x2.
      assert np.abs(box - _flipped(best, width, scale, other)).max() == pytest.approx(
          scale, abs=1e-3)
      checked += 1
  assert checked >= 4

