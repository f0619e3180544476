"""Mask R-CNN R-50-FPN on this machine: tfdet beside the TF Model Garden, part by part.

  bash benchmarks/peers/setup_model_garden.sh        # the peer's own venv, once
  python benchmarks/bench_mask_rcnn_vs_model_garden.py [--rounds 3] [--parts inference train]
  python benchmarks/bench_mask_rcnn_vs_model_garden.py --side=tfdet --part=inference  # one side

Both sides build Mask R-CNN R-50-FPN with random weights as each library
ships it (tfdet: the zoo's ``e2e_mask_rcnn_R-50-FPN_1x``, Detectron's
architecture; Model Garden: ``maskrcnn_resnetfpn_coco`` with its input size
set to 800x1344) and read the same scene (benchmarks/rcnn_batches.py, written
to an .npz that both processes load): images of 800x1333 padded to 800x1344,
8 boxes per image (rectangle masks).

Parts, each side and each part in its own process (so that peak memory is
the part's own):

* inference: one image. ``dense`` = backbone + FPN + RPN head; ``whole`` =
  the model's inference call, to the detections and their 28x28 masks; the
  first call (tracing) timed apart.
* train: one training step at batch 2 (forward, the library's own losses,
  backward, SGD with momentum). Model Garden's step is its task's
  ``train_step``; its RPN targets are assigned by its input pipeline, outside
  the step (tfdet assigns them inside), and are computed here beforehand with
  its own anchor labeler, as its parser does.
* roi_align: multi-level RoIAlign over P2..P5 (256 channels, 2 images),
  1024 RoIs spread over the levels, at 7x7 and 14x14, forward and
  forward+backward (the output and its gradient w.r.t. the features, as a
  training step needs both: a call that fetched only the gradient would let
  TensorFlow prune the forward, which the gradient does not read, and time
  the backward alone). tfdet: its custom op with
  Detectron's settings (2x2 samples per bin); Model Garden:
  ``multilevel_crop_and_resize`` (one sample per bin, its default).

Timings are medians of ``--runs`` calls after ``--warmup`` (``--train_runs``
/ ``--train_warmup`` for the training step); the two sides alternate over
``--rounds`` rounds and the table shows the median over rounds of each side's
medians, their ratio, and each process's peak memory (ru_maxrss).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import rcnn_batches  # noqa: E402
import side_by_side  # noqa: E402

ROOT = side_by_side.ROOT
PEER_SCRIPT = os.path.join(ROOT, "benchmarks", "peers", "model_garden_mask_rcnn.py")
ROW = "e2e_mask_rcnn_R-50-FPN_1x"
PADDED_HW = (800, 1344)
NUM_ROIS = 1024
ROI_SIZES = (7, 14)
FEATURE_CHANNELS = 256
STRIDES = (4, 8, 16, 32)
PARTS = ("inference", "train", "roi_align")


def write_scene(path, seed=0, valid_hw=(800, 1333), padded_hw=PADDED_HW, num_rois=NUM_ROIS):
  """The inputs both sides read: the training scene (batch 2; inference uses image 0) and the
  RoIAlign part's RoIs."""
  arrays = rcnn_batches.scene(batch=2, valid_hw=valid_hw, seed=seed)
  rois, image_index = rcnn_batches.fpn_rois(num_rois, 2, padded_hw, seed=seed)
  np.savez(path, rois=rois, roi_image=image_index, padded_hw=np.array(padded_hw), **arrays)


def _load_scene(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def _build_model():
  from tfdet import gin_files

  gin_files.parse([f"12_2017_baselines/{ROW}.gin"])
  spec = gin_files.detector_spec()
  return spec, spec.build()


def _rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_inference(scene, warmup, runs):
  import tensorflow as tf

  from tfdet.data import keys

  _, model = _build_model()
  one = {k: v[:1] for k, v in scene.items() if k in ("boxes", "keypoints", "proposals")}
  batch = rcnn_batches.tfdet_batch(dict(one, valid_hw=scene["valid_hw"]),
                                   tuple(scene["padded_hw"]))
  images = batch[keys.IMAGES]
  dense = tf.function(lambda: model.proposal_source.dense(model.backbone(images, training=False)))
  whole = tf.function(lambda: model(batch, training=False))
  result = {}
  for name, fn in (("dense", dense), ("whole", whole)):
    first, times = side_by_side.timed_calls(fn, warmup, runs)
    result.update({f"{name}_s": statistics.median(times), f"{name}_all": times,
                   f"{name}_first_call_s": first})
  result["first_call_s"] = result.pop("whole_first_call_s")
  result["num_params"] = side_by_side.num_params(model)
  return result


def measure_train(scene, warmup, runs):
  spec, model = _build_model()
  batch = rcnn_batches.tfdet_batch(scene, tuple(scene["padded_hw"]))
  # No eager call of the model first: the process's peak memory is then the training step's
  # (with an eager inference of this batch first it peaked at 8.9 GB, the step alone 4.0 GB).
  # Learning rate 0: the step computes and applies its update (momentum and all), but the
  # weights stay put, so every timed step is the same step. With random weights the
  # activations are large and one real update makes the losses NaN.
  train_step = rcnn_batches.train_step(spec, model, batch, learning_rate=0.0)

  first, times = side_by_side.timed_calls(train_step, warmup, runs)
  return {"train_s": statistics.median(times), "train_all": times, "train_first_call_s": first,
          "train_loss": float(train_step())}


def first_elements(tensors):
  """The first element of each tensor: what a RoIAlign timing fetches. Fetching the whole
  output (205 MB at 14x14, 183 MB of gradients) adds the same allocation and page-fault time
  to both sides, which is not the op's."""
  import tensorflow as tf

  return tf.nest.map_structure(lambda t: tf.reshape(t, [-1])[:1], tensors)


def measure_roi_align(scene, warmup, runs):
  import tensorflow as tf

  from tfdet.ops import fpn_levels
  from tfdet.ops.roi_align import multilevel_roi_align

  rng = np.random.default_rng(1)
  height, width = (int(s) for s in scene["padded_hw"])
  features = [tf.constant(rng.normal(size=[2, height // s, width // s, FEATURE_CHANNELS])
                          .astype(np.float32)) for s in STRIDES]
  rois = tf.constant(scene["rois"])
  image = tf.constant(scene["roi_image"])
  levels = fpn_levels.assign_levels(rois, min_level=2, max_level=5, convention="detectron") - 2
  result = {}
  for size in ROI_SIZES:
    upstream = tf.constant(rng.normal(size=[len(scene["rois"]), size, size, FEATURE_CHANNELS])
                           .astype(np.float32))

    def pool(maps, size=size):
      return multilevel_roi_align(maps, rois, image, levels, output_size=size, sampling_ratio=2,
                                  aligned=False, spatial_scales=[1.0 / s for s in STRIDES])

    def forward_backward(pool=pool, upstream=upstream):
      with tf.GradientTape() as tape:
        tape.watch(features)
        out = pool(features)
      return first_elements((out, tape.gradient(out, features, output_gradients=upstream)))

    for name, fn in (("fwd", tf.function(lambda pool=pool: first_elements(pool(features)))),
                     ("fwd_bwd", tf.function(forward_backward))):
      _, times = side_by_side.timed_calls(fn, warmup, runs)
      result[f"roi_align_{size}_{name}_s"] = statistics.median(times)
  return result


def measure(part, scene_path, warmup, runs):
  """One part of tfdet's side, in this process: the RESULT dict."""
  import tensorflow as tf

  scene = _load_scene(scene_path)
  fn = {"inference": measure_inference, "train": measure_train,
        "roi_align": measure_roi_align}[part]
  result = fn(scene, warmup, runs)
  result.update(library="tfdet", tf_version=tf.__version__, part=part, config=ROW,
                input=[int(s) for s in scene["padded_hw"]], peak_rss_mb=_rss_mb())
  return result


ROWS = {
    "inference": [("inference, 1 image, whole (s)", "whole_s", 3),
                  ("of which backbone + FPN + RPN head (s)", "dense_s", 3),
                  ("inference, first call incl. trace (s)", "first_call_s", 1),
                  ("inference process, peak memory (MB)", "peak_rss_mb", 0)],
    "train": [("training step, 2 images (s)", "train_s", 2),
              ("training, first call incl. trace (s)", "train_first_call_s", 1),
              ("training process, peak memory (MB)", "peak_rss_mb", 0)],
    "roi_align": [(f"multi-level RoIAlign, {NUM_ROIS} RoIs, {s}x{s}, {d} (s)",
                   f"roi_align_{s}_{k}_s", 3)
                  for s in ROI_SIZES for k, d in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd"))],
}


def side_by_side_run(args):
  peer_python = side_by_side.peer_python(args.peer_venv)
  with tempfile.TemporaryDirectory() as tmp:
    scene_path = os.path.join(tmp, "scene.npz")
    write_scene(scene_path)
    results = {}
    for part in args.parts:
      warmup, runs = ((args.train_warmup, args.train_runs) if part == "train"
                      else (args.warmup, args.runs))
      common = [f"--part={part}", f"--scene={scene_path}", f"--warmup={warmup}",
                f"--runs={runs}"]
      sides = [("tfdet", [sys.executable, os.path.abspath(__file__), "--side=tfdet", *common],
                {"PYTHONPATH": ROOT}),
               ("model_garden", [peer_python, PEER_SCRIPT, *common], None)]

      def report(r, name, result, part=part):
        shown = {k: round(v, 3) for k, v in result.items()
                 if k.endswith("_s") and isinstance(v, float)}
        print(f"{part} round {r + 1} {name}: {json.dumps(shown)}", flush=True)

      results[part] = side_by_side.alternate(sides, args.rounds, report)
  print(f"\n{args.rounds} rounds, medians of each side's medians\n")
  lines = side_by_side.table([], [], [])[:2]
  for part in args.parts:
    lines += side_by_side.table(results[part]["tfdet"], results[part]["model_garden"],
                                ROWS[part])[2:]
  print("\n".join(lines))
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--side", choices=["tfdet"], default=None,
                      help="measure one part of one side in this process (RESULT line)")
  parser.add_argument("--part", choices=PARTS, default="inference", help="with --side")
  parser.add_argument("--scene", default=None, help="with --side: the scene .npz")
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--train_warmup", type=int, default=1)
  parser.add_argument("--train_runs", type=int, default=3)
  parser.add_argument("--peer_venv", default=side_by_side.DEFAULT_PEER_VENV)
  args = parser.parse_args()
  if args.side == "tfdet":
    scene_path = args.scene
    if scene_path is None:
      scene_path = os.path.join(tempfile.mkdtemp(), "scene.npz")
      write_scene(scene_path)
    print("RESULT " + json.dumps(measure(args.part, scene_path, args.warmup, args.runs)))
  else:
    side_by_side_run(args)


if __name__ == "__main__":
  main()
