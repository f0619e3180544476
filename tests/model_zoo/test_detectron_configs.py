"""gin_configs/12_2017_baselines/ against Detectron's merged configs of its 74 rows.

Every row has a config; every key of Detectron's config is mapped, built in or
deliberately left aside (tfdet.model_zoo.detectron_keys); every mapped value
matches; and every config builds its model.
"""

import json
import pathlib

import gin
import numpy as np
import pytest

from tests import testdata
from tfdet import gin_files
from tfdet.model_zoo import detectron_keys, gin_values
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import spec

with open(testdata.DETECTRON_BASELINES_JSON) as f:
  BASELINES = json.load(f)
ZOO_DIR = gin_files.CONFIG_DIR / "12_2017_baselines"
ROWS = sorted(BASELINES)


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_the_zoo_has_74_rows_and_a_config_for_each():
  assert len(ROWS) == 74
  assert sorted(p.stem for p in ZOO_DIR.glob("*.gin")) == ROWS


def test_every_detectron_key_is_placed_exactly_once():
  keys = set()
  for cfg in BASELINES.values():
    keys |= set(detectron_keys.flatten(cfg))
  mapped = [m.key for m in detectron_keys.MAPPED]
  fixed = [f.key for f in detectron_keys.FIXED]
  unmapped = list(detectron_keys.UNMAPPED)
  placed = mapped + fixed + unmapped
  assert len(set(mapped)) == len(mapped) and len(set(placed)) == len(placed), "a key twice"
  assert set(placed) == keys, (sorted(keys - set(placed)), sorted(set(placed) - keys))
  assert all(reason for reason in detectron_keys.UNMAPPED.values())
  assert len(keys) == 203 and len(mapped) > 120


@pytest.mark.parametrize("name", ROWS)
def test_every_row_matches_detectron(name):
  gin_files.parse([str(ZOO_DIR / f"{name}.gin")])
  mismatches, checked = detectron_keys.compare(BASELINES[name])
  assert not mismatches, "\n".join(str(m) for m in mismatches)
  assert checked >= 50, checked  # the family's keys, not a handful


def test_a_wrong_binding_is_caught_by_name():
  # An 8-image row run at 2 images per GPU: on 8 GPUs it is a 16-image run, so the images
  # per GPU, the LR and the iteration counts all differ from Detectron's.
  name = "e2e_mask_rcnn_X-101-64x4d-FPN_1x"
  gin_files.parse([str(ZOO_DIR / f"{name}.gin")], ["train.run.images_per_replica = 2",
                                                   "config.RoiHeadSettings.fg_thresh = 0.6"])
  mismatches, _ = detectron_keys.compare(BASELINES[name])
  wrong = {m.key: m for m in mismatches}
  assert set(wrong) == {"TRAIN.IMS_PER_BATCH", "SOLVER.BASE_LR", "SOLVER.MAX_ITER",
                        "SOLVER.STEPS", "TRAIN.FG_THRESH", "TRAIN.BBOX_THRESH"}
  assert (wrong["SOLVER.BASE_LR"].detectron, wrong["SOLVER.BASE_LR"].got) == (0.01, 0.02)
  assert "roi_settings.fg_thresh" in str(wrong["TRAIN.FG_THRESH"])


def test_the_linear_scaling_consequence_of_the_8_image_rows():
  # Detectron's 8-image rows halve the LR and double the iterations of the 16-image ones;
  # the configs say 16-image numbers and one image per replica.
  for name, ims in [("e2e_faster_rcnn_R-50-C4_2x", 1), ("e2e_faster_rcnn_R-50-FPN_2x", 2)]:
    gin.clear_config()
    gin_files.parse([str(ZOO_DIR / f"{name}.gin")])
    assert gin_values.value("train.run.images_per_replica") == ims
    assert gin_values.value("train.run.base_lr") == 0.02
    assert gin_values.value("train.run.max_iter") == 180000
    solver = BASELINES[name]["SOLVER"]
    assert (solver["BASE_LR"], solver["MAX_ITER"]) == ((0.01, 360000) if ims == 1 else
                                                       (0.02, 180000))


def test_only_the_x152_row_evaluates_with_tta():
  with_tta = []
  for name in ROWS:
    gin.clear_config()
    gin_files.parse([str(ZOO_DIR / f"{name}.gin")])
    if gin_files.tta_configured():
      with_tta.append(name)
  assert with_tta == ["e2e_mask_rcnn_X-152-32x8d-FPN-IN5k_1.44x"]


def test_an_unresolvable_selector_is_named():
  gin_files.parse([str(ZOO_DIR / "rpn_R-50-FPN_1x.gin")])
  with pytest.raises(gin_values.UnresolvedSetting, match="no_such_parameter"):
    gin_values.value("builders.build_rcnn.no_such_parameter")
  with pytest.raises(gin_values.UnresolvedSetting, match="nothing.here"):
    gin_values.value("nothing.here.param")


def _model_groups():
  """Rows that bind their builder identically build the same model: first row -> rows."""
  groups = {}
  for name in ROWS:
    gin.clear_config()
    gin_files.parse([str(ZOO_DIR / f"{name}.gin")])
    builder = gin_values.model_builder()
    key = (builder, repr(sorted(gin.get_bindings(builder).items())))
    groups.setdefault(key, []).append(name)
  gin.clear_config()
  return {names[0]: names for names in groups.values()}


MODEL_GROUPS = _model_groups()


def test_model_groups_differ_only_in_solver_and_schedule():
  # 74 rows, 42 models: the 1x / 2x / s1x twins share one.
  assert sum(len(v) for v in MODEL_GROUPS.values()) == 74 and len(MODEL_GROUPS) == 42


@pytest.mark.parametrize("name", sorted(MODEL_GROUPS))
def test_every_config_builds_its_model_and_runs_it(name):
  # Each config as written, with a shrunk trunk (one block per stage at a quarter width;
  # its groups and stride-in-1x1 as configured) and narrower mask / keypoint convs, so
  # that the 42 distinct models build and run in about 90 s on 2 cores. Full-size
  # models: MODEL_ZOO.md's parameter counts (benchmarks/model_zoo_table.py) and the
  # full-size construction tests of each family.
  cfg = BASELINES[name]
  row = detectron_keys.Row.of(cfg)
  gin_files.parse([str(ZOO_DIR / f"{name}.gin")])
  builder = gin_values.model_builder()
  tiny = [f"{builder}.stage_blocks = (1, 1, 1, 1)", f"{builder}.width_divisor = 4"]
  if not row.retinanet:
    tiny += [f"{builder}.keypoint_conv_dim = 64", f"{builder}.mask_conv_dim = 64"]
  gin.clear_config()
  gin_files.parse([str(ZOO_DIR / f"{name}.gin")], tiny)
  model = gin_files.detector_spec().build()
  divisor = gin_values.value("eval/pipeline.build_dataset.size_divisibility")
  outputs = model(spec.dummy_batch(max(64, divisor)), training=False)
  assert model.backbone.get_layer("res2_0_branch2b").groups == cfg["RESNETS"]["NUM_GROUPS"]
  assert model.num_classes == cfg["MODEL"]["NUM_CLASSES"]
  assert (out.PROPOSALS in outputs) == (not row.retinanet)
  assert (out.DETECTION_BOXES in outputs) == (not row.rpn_only)
  assert (out.DETECTION_MASKS in outputs) == row.mask
  assert (out.DETECTION_KEYPOINTS in outputs) == row.keypoint
  if not row.rpn_only:
    n = int(outputs[out.NUM_DETECTIONS][0])
    assert np.isfinite(outputs[out.DETECTION_BOXES].numpy()[0, :n]).all()
  if not row.retinanet:
    assert model.reads_precomputed_proposals == row.precomputed
    levels = cfg["FPN"]["RPN_MAX_LEVEL"] - cfg["FPN"]["RPN_MIN_LEVEL"] + 1
    assert len(model.rpn_levels) == (0 if row.precomputed else levels if row.fpn else 1)
  if row.mask:
    m = cfg["MRCNN"]["RESOLUTION"]
    assert outputs[out.DETECTION_MASKS].shape[2:] == (m, m)
  if row.keypoint:
    assert outputs[out.DETECTION_KEYPOINTS].shape[2:] == (cfg["KRCNN"]["NUM_KEYPOINTS"], 3)


def test_model_zoo_md_lists_every_row_with_its_parameter_count():
  # MODEL_ZOO.md is written by benchmarks/model_zoo_table.py from its measurements.
  root = pathlib.Path(__file__).resolve().parents[2]
  doc = (root / "MODEL_ZOO.md").read_text()
  measured = json.loads(
      (root / "benchmarks" / "model_zoo_records" / "model_zoo_measurements.json").read_text())
  for name in ROWS:
    assert f"| `{name}` |" in doc, name
    assert f"{measured[name]['parameters'] / 1e6:.1f}M" in doc.split(f"| `{name}` |")[1][:200]
