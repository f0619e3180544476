"""MODEL_ZOO.md: every row of Detectron's 12_2017 zoo as tfdet builds it, beside Detectron's numbers.

  python benchmarks/model_zoo_table.py --measure_params       # build all 74 (42 models)
  python benchmarks/model_zoo_table.py --measure_times --rows 'R-50-FPN_1x$' --runs 3
  python benchmarks/model_zoo_table.py                        # only rewrite MODEL_ZOO.md

Measurements are kept in benchmarks/model_zoo_records/model_zoo_measurements.json, so that
each run adds to them and the document is rewritten from all of them:

* parameters: the full-size model of the row's config (all of its weights,
  the frozen ones included), built with its config as shipped.
* train step / inference: one training step (forward, the config's losses,
  backward, SGD update) and one inference step (forward to the detections,
  masks and keypoints) of the full-size model on one 800x1333 image (padded to
  the config's canvas multiple) with 8 objects and, for the rows that read
  precomputed proposals, 1000 proposals; tf.functions after a warm-up, the
  median of --runs runs, on this machine (its CPU count is recorded). Rows that
  differ only in their schedule (1x / 2x / s1x) build the same model and read
  the same inputs: one measurement serves them all.

Detectron's published numbers (P100 GPUs; COCO minival AP) come from
benchmarks/model_zoo_records/detectron_published_12_2017.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import rcnn_batches  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdet import gin_files  # noqa: E402
from tfdet.data import keys  # noqa: E402
from tfdet.model_zoo import gin_values  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "model_zoo_records"
PUBLISHED = DATA / "detectron_published_12_2017.json"
MEASURED = DATA / "model_zoo_measurements.json"
DOC = ROOT / "MODEL_ZOO.md"
ZOO = "12_2017_baselines"
# Detectron's tables, in its order: (title, row-name pattern).
TABLES = [
    ("RPN proposal baselines", r"^rpn_(?!person)"),
    ("Fast R-CNN and Mask R-CNN on precomputed RPN proposals", r"^(fast|mask)_rcnn_"),
    ("End-to-end Faster and Mask R-CNN", r"^e2e_(faster|mask)_rcnn_(?!X-152)"),
    ("RetinaNet", r"^retinanet_"),
    ("Mask R-CNN X-152-32x8d-FPN-IN5k (multi-scale training, test-time augmentation)",
     r"^e2e_mask_rcnn_X-152"),
    ("Person-only RPN proposal baselines (for the keypoint rows)", r"^rpn_person_only_"),
    ("Keypoint R-CNN on precomputed RPN proposals", r"^keypoint_rcnn_"),
    ("End-to-end Keypoint R-CNN", r"^e2e_keypoint_rcnn_"),
]


BACKBONE_ORDER = ("R-50-C4", "R-50-FPN", "R-101-FPN", "X-101-64x4d-FPN", "X-101-32x8d-FPN",
                  "X-152-32x8d-FPN-IN5k")


def _order(row):
  """Detectron's order within a table: backbone as its tables list them, then schedule."""
  backbone = next(b for b in BACKBONE_ORDER if f"_{b}_" in row)
  return BACKBONE_ORDER.index(backbone), row.startswith(("mask", "e2e_mask")), row


def _rows():
  return sorted((p.stem for p in (gin_files.CONFIG_DIR / ZOO).glob("*.gin")), key=_order)


def _parse(row, bindings=()):
  gin.clear_config()
  gin_files.parse([f"{ZOO}/{row}.gin"], bindings)


def _model_key(row, *, with_inputs=False):
  """Rows with equal keys build the same model (and, with_inputs, read the same inputs)."""
  _parse(row)
  builder = gin_values.model_builder()
  key = [builder, sorted(gin.get_bindings(builder).items())]
  if with_inputs:
    for scope, fn in (("train", "inputs.build_input"), ("eval", "pipeline.build_dataset")):
      with gin.config_scope(scope):
        key.append(sorted(gin.get_bindings(fn).items()))
  return repr(key)


def _batch(model, instances=8, proposals=1000):
  """One 800x1333 image with `instances` boxes, polygons, keypoints and proposals."""
  divisor = gin_values.value("eval/pipeline.build_dataset.size_divisibility")
  height, width = (-(-s // divisor) * divisor for s in (800, 1333))
  rng = np.random.default_rng(0)
  m, v = 16, 16
  boxes = np.zeros([1, m, 4], np.float32)
  polys = np.zeros([1, m, v, 2], np.float32)
  ids = -np.ones([1, m, v], np.int32)
  for i in range(instances):
    x, y = rng.uniform(0, 1333 - 300), rng.uniform(0, 800 - 300)
    w, h = rng.uniform(40, 300, 2)
    boxes[0, i] = [x, y, x + w, y + h]
    polys[0, i, :4] = [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]
    ids[0, i, :4] = 0
  valid = np.arange(m)[None] < instances
  kps = np.zeros([1, m, 17, 3], np.float32)
  kps[0, :instances, :, :2] = boxes[0, :instances, None, :2] + rng.uniform(
      0, 1, [instances, 17, 2]) * (boxes[0, :instances, None, 2:] - boxes[0, :instances, None, :2])
  kps[0, :instances, :, 2] = 2
  xy = rng.uniform(0, [1233, 700], [1, proposals, 2])
  props = np.concatenate([xy, xy + rng.uniform(16, 300, [1, proposals, 2])], -1)
  return {
      keys.IMAGES: tf.constant(rng.normal(0, 50, [1, height, width, 3]).astype(np.float32)),
      keys.IMAGE_INFO: tf.constant([[800, 1333, 1.6667, 480.0, 800.0]], tf.float32),
      keys.GT_BOXES: tf.constant(boxes), keys.GT_CLASSES: tf.constant(valid.astype(np.int32)),
      keys.GT_VALID: tf.constant(valid), keys.GT_IS_CROWD: tf.constant(np.zeros([1, m], bool)),
      keys.GT_POLYGONS: tf.constant(polys), keys.GT_POLYGON_IDS: tf.constant(ids),
      keys.GT_KEYPOINTS: tf.constant(kps),
      keys.PROPOSALS: tf.constant(props.astype(np.float32)),
      keys.PROPOSAL_SCORES: tf.constant(np.linspace(1, 0, proposals, dtype=np.float32)[None]),
      keys.PROPOSALS_VALID: tf.ones([1, proposals], tf.bool),
  }


def _median_s(fn, runs):
  tf.nest.map_structure(lambda x: x.numpy(), fn())  # trace and warm up
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    tf.nest.map_structure(lambda x: x.numpy(), fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def step_times(row, runs):
  _parse(row)
  spec = gin_files.detector_spec()
  model = spec.build()
  batch = _batch(model)
  train_step = rcnn_batches.train_step(spec, model, batch, learning_rate=1e-4)

  @tf.function
  def infer_step():
    return model(batch, training=False)

  return _median_s(train_step, runs), _median_s(infer_step, runs)


def _load(path):
  return json.loads(path.read_text()) if path.exists() else {}


def _machine():
  return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, no GPU" \
      if not tf.config.list_physical_devices("GPU") else "GPU"


def measure(args):
  measured = _load(MEASURED)
  rows = [r for r in _rows() if re.search(args.rows, r)]
  if args.measure_params:
    counts = {}
    for row in rows:
      key = _model_key(row)
      if key not in counts:
        tf.keras.backend.clear_session()
        model = gin_files.detector_spec().build()
        counts[key] = sum(int(np.prod(w.shape)) for w in model.weights)
        print(f"{row:45s} {counts[key]:>14,d}", flush=True)
      measured.setdefault(row, {})["parameters"] = counts[key]
  if args.measure_times:
    twins = {}
    for row in _rows():
      twins.setdefault(_model_key(row, with_inputs=True), []).append(row)
    done = set()
    for row in rows:
      if row in done:
        continue
      tf.keras.backend.clear_session()
      train_s, infer_s = step_times(row, args.runs)
      print(f"{row:45s} train step {train_s:7.2f} s   inference {infer_s:7.2f} s", flush=True)
      # The rows of another schedule build the same model on the same inputs: one measure.
      for twin in next(v for v in twins.values() if row in v):
        measured.setdefault(twin, {}).update(
            train_step_s=round(train_s, 2), inference_s=round(infer_s, 2), runs=args.runs,
            measured_as=row, machine=_machine(), date=datetime.date.today().isoformat())
        done.add(twin)
      MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
  MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


def _fmt(value, digits=1):
  return "-" if value is None else f"{value:.{digits}f}"


def _row_line(row, published, measured):
  p, m = published[row], measured.get(row, {})
  params = f"{m['parameters'] / 1e6:.1f}M" if "parameters" in m else "-"
  ours = f"{_fmt(m.get('train_step_s'), 2)} / {_fmt(m.get('inference_s'), 2)}"
  return (f"| `{row}` | {p['backbone']} | {p['type']} | {p['schedule']} | "
          f"{p['images_per_gpu']} | {params} | {ours} | "
          f"{_fmt(p['train_s_per_iter'], 3)} / {p['inference_s_per_image']} | "
          f"{_fmt(p['box_ap'])} / - | {_fmt(p['mask_ap'])} / - | {_fmt(p['kp_ap'])} / - | "
          f"{_fmt(p['proposal_ar'])} / - |")


def write_doc():
  published = json.loads(PUBLISHED.read_text())["rows"]
  measured = _load(MEASURED)
  machines = sorted({m["machine"] for m in measured.values() if "machine" in m})
  out = [HEADER.format(machines="; ".join(machines) or "(none yet)")]
  for title, pattern in TABLES:
    rows = [r for r in _rows() if re.search(pattern, r)]
    out += [f"## {title}", "", COLUMNS, "|" + "---|" * 12]
    out += [_row_line(r, published, measured) for r in rows]
    out.append("")
  out.append(FOOTER)
  DOC.write_text("\n".join(out))
  print(f"wrote {DOC}")


HEADER = """# Model zoo: Detectron's 12_2017 baselines in tfdet

Every row of [Detectron's 12_2017 model zoo](https://github.com/facebookresearch/Detectron/blob/main/MODEL_ZOO.md)
is a config of its own, `gin_configs/12_2017_baselines/<row>.gin`, made of the
shared building blocks (model, backbone, solver, schedule, data). Its
hyperparameters are Detectron's: `tests/model_zoo/test_detectron_configs.py`
compares every key of Detectron's merged config of the row with what the gin
config binds, through the one table `tfdet/model_zoo/detectron_keys.py` (which
also lists the keys tfdet builds in and the few it leaves aside, with the
reasons).

Columns: backbone, type, schedule and images per GPU are Detectron's (8 GPUs;
tfdet's configs give the 16-image solver and the images per replica, and the
linear scaling rule makes them Detectron's on 8 replicas). **params**: our
full-size model, every weight. **ours: train / infer (s)**: one training step
and one inference step of our full-size model on one 800x1333 image, measured
on {machines}, random weights, after a warm-up call (`benchmarks/model_zoo_table.py
--measure_times --runs 1`, which also rewrites this file). **Detectron: train / infer (s)**: Detectron's published s/iter (8
P100 GPUs, 8 or 16 images) and s/image. **AP and AR**: Detectron's published
COCO minival numbers / ours; ours are "-" until a row is trained, or its
Detectron weights imported (Commands, below), and evaluated on COCO, which
has not been done yet (this machine has no GPU and no COCO; tfdet's own runs
so far are on its synthetic data).
"""

COLUMNS = ("| config | backbone | type | lr schd | im/gpu | params | ours: train / infer (s) | "
           "Detectron: train / infer (s) | box AP | mask AP | kp AP | prop. AR |")

FOOTER = """## Commands

With COCO converted to shards (`python -m data_prep.coco_to_tfrecord`; the keypoint
and person-only rows use `person_keypoints_*.json`), and `ROW` one of the names above:

```
python -m tfdet.train    --gin_file=12_2017_baselines/$ROW.gin --model_dir=runs/$ROW \\
    --gin_param='train/inputs.build_input.file_pattern = "/data/coco/train-*"' \\
    --gin_param='train.run.init_checkpoint = "/data/imagenet/R-50"'
python -m tfdet.evaluate --gin_file=12_2017_baselines/$ROW.gin --model_dir=runs/$ROW \\
    --file_pattern='/data/coco/val-*' --annotations_file=instances_val2017.json
python -m tfdet.export   --gin_file=12_2017_baselines/$ROW.gin --model_dir=runs/$ROW \\
    --export_dir=runs/$ROW/export/1
```

ImageNet trunks and Detectron's trained models come in with
`python -m tfdet.import_detectron --gin_file=12_2017_baselines/$ROW.gin --pkl=FILE
--output=DIR [--backbone_only]` (ImageNet files: `--backbone_only`, then
`train.run.init_checkpoint = "DIR"`; a trained model: `--model_dir=DIR` for evaluate and
export).

Two-stage rows (`fast_rcnn_*`, `mask_rcnn_*`, `keypoint_rcnn_*`) train and test on the
proposals of the RPN row named in their config: evaluating that row writes
`<output_dir>/proposals.npz` for the split it ran on, and
`python -m data_prep.add_proposals` writes them (or Detectron's published proposal
pickles) into a copy of the shards. Those rows cannot be exported (no RPN).

The X-152 row evaluates with Detectron's test-time augmentation
(`evaluation/detectron_tta.gin`; `--notta` for the plain test).
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--measure_params", action="store_true")
  parser.add_argument("--measure_times", action="store_true")
  parser.add_argument("--rows", default="", help="regex: the rows to measure (default all)")
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args()
  if args.measure_params or args.measure_times:
    measure(args)
  write_doc()


if __name__ == "__main__":
  main()
