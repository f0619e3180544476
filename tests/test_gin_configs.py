"""Every shipped .gin file parses, and the model files build the models they name."""

import gin
import pytest

from tfdet import gin_files
from tfdet.modeling.detectors import builders

MODEL_FILES = [f for f in gin_files.shipped_gin_files() if "/models/" in f]
TINY = ["builders.build_rcnn.stage_blocks = (1, 1, 1, 1)",
        "builders.build_rcnn.width_divisor = 2"]


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_there_are_gin_files():
  assert len(gin_files.shipped_gin_files()) >= 10


@pytest.mark.parametrize("path", gin_files.shipped_gin_files(),
                         ids=lambda p: p.split("gin_configs/")[-1])
def test_every_gin_file_parses(path):
  # Backbone and convention files are fragments; parse them over a model file.
  files = [path] if "/models/" in path else ["models/mask_rcnn_fpn.gin", path]
  gin_files.parse(files, finalize=False)
  assert gin.config_str()


@pytest.mark.parametrize("heads,body,expect_fpn", [
    ("rpn", "fpn", True), ("faster", "c4", False), ("mask", "fpn", True), ("mask", "c4", False),
])
def test_model_files_build_what_they_name(heads, body, expect_fpn):
  gin_files.parse([f"models/{heads}_{body}.gin" if heads == "rpn" else
                   f"models/{heads}_rcnn_{body}.gin", "backbones/X-101-64x4d.gin"], TINY)
  model = gin.get_configurable(builders.build_rcnn)()
  assert (model.box_head is None) == (heads == "rpn")
  assert (model.mask_head is None) == (heads != "mask")
  assert (len(model.rpn_levels) == 5) == expect_fpn
  assert model.backbone.get_layer("res2_0_branch2b").groups == 64
  assert model.convention == "detectron" and not model.aligned_roi
  if not expect_fpn:
    assert model.rpn_settings.pre_nms_top_n_train == 12000
    assert model.roi_settings.box_roi_size == 14


def test_modern_switches_conventions():
  gin_files.parse(["models/faster_rcnn_fpn.gin", "models/rcnn_modern.gin"], TINY)
  model = gin.get_configurable(builders.build_rcnn)()
  assert model.convention == "modern" and model.sampling == "modern" and model.aligned_roi


def test_bad_binding_names_it():
  with pytest.raises(ValueError, match="no_such_parameter"):
    gin_files.parse(["models/mask_rcnn_fpn.gin"],
                    ["builders.build_rcnn.no_such_parameter = 3"])


def test_missing_file_is_named():
  with pytest.raises(FileNotFoundError, match="nope.gin"):
    gin_files.parse(["models/nope.gin"])


def test_unregistered_function_is_called_plainly():
  # models/*.gin never import tfdet.data.pipeline: the entry points still build its data set.
  from tfdet.data import pipeline

  def never_registered(value=1):
    return value

  gin_files.parse(["models/mask_rcnn_fpn.gin"])
  assert gin_files.configurable(never_registered) is never_registered
  assert gin_files.bindings(never_registered, scope="eval") == {}
  # (Another test's file may have registered it: registration outlives gin.clear_config.)
  assert gin_files.bindings(pipeline.build_dataset, scope="eval") == {}
  assert gin_files.configurable(builders.build_rcnn) is not builders.build_rcnn


def test_eval_resize_follows_the_eval_bindings():
  gin_files.parse(["models/mask_rcnn_fpn.gin"])
  assert gin_files.eval_resize() == (800, 1333)  # TEST.SCALE, TEST.MAX_SIZE
  gin.clear_config()
  gin_files.parse(["quickstart/mask_rcnn_tiny_fpn.gin"], ["SCALES = (128, 160)", "MAX_SIZE = 256"])
  assert gin_files.eval_resize() == (160, 256)
  gin.clear_config()
  gin_files.parse(["quickstart/mask_rcnn_tiny_fpn.gin"])
  assert gin_files.eval_resize() == (192, 320)
