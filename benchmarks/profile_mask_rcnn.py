"""Where one Mask R-CNN inference and one training step spend their time (TF's profiler).

  python benchmarks/profile_mask_rcnn.py                         # R-50-FPN, 800x1333
  python benchmarks/profile_mask_rcnn.py --row e2e_mask_rcnn_R-50-C4_1x --batch 2
  python benchmarks/profile_mask_rcnn.py --dump_ops 40            # the 40 costliest ops too

Builds the zoo row's full-size model with random weights, runs one inference
(batch 1) and one training step (``--batch`` images: forward, the row's
losses, backward, SGD with momentum) as tf.functions, warms each up, then
traces ``--steps`` calls of each with ``tf.profiler.experimental`` and reads
the trace (the XSpace protobuf the profiler writes). Every TensorFlow op the
executor ran is put in one stage by its name scope (``STAGES``): backbone,
FPN, RPN head, proposals, RoI sampling and targets, RoIAlign, box head,
detections (decoding and NMS), mask head, keypoint head, losses, backward
(by the forward stage it differentiates), optimizer. The table gives each
stage's op time per call (the sum of its ops' durations: with ops running
side by side on several threads it can exceed the wall clock, which is shown
apart) and its share of all op time.
"""

import argparse
import collections
import glob
import os
import re
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import rcnn_batches  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402
from tensorflow.python.profiler.internal import flops_registry  # noqa: E402, F401 (registers)
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from tfdet import gin_files  # noqa: E402
from tfdet.model_zoo import gin_values  # noqa: E402

# (stage, regex on the op's name scope), first match wins. Backward ops (under
# "gradient_tape/") are matched on the rest of their name and reported as
# "backward: <stage>".
STAGES = (
    ("optimizer", r"(^|/)(SGD|sgd|optimizer)(/|_)|AssignAddVariableOp|ResourceApply"),
    ("losses", r"(^|/)(losses?|[a-z_]*_loss)(_\d+)?(/|$)"),
    ("RoIAlign", r"(?i)roi_?align"),
    ("RoI sampling and targets", r"(?i)(^|/)(sampl|targets|match)"),
    ("proposals", r"(?i)(^|/)(proposals|anchors)(_\d+)?(/|$)"),
    ("detections (decode, NMS)", r"(?i)(^|/)(detections|postprocess|map/while)(_\d+)?(/|$)"),
    ("mask head", r"(?i)(^|/)mask"),
    ("keypoint head", r"(?i)(^|/)keypoint"),
    ("RPN head", r"(?i)(^|/)rpn"),
    ("box head", r"(?i)(^|/)(box_head|box)(_\d+)?(/|$)"),
    ("FPN", r"(?i)(^|/)fpn_"),
    ("backbone", r"(?i)(^|/)(backbone|res[2-5]_|conv1|pool1)"),
)
# Ops whose type names their stage wherever they sit.
OP_TYPES = {
    "TfdetMultiLevelRoiAlign": "RoIAlign", "TfdetRoiAlign": "RoIAlign",
    "TfdetMultiLevelRoiAlignGrad": "backward: RoIAlign", "TfdetRoiAlignGrad": "backward: RoIAlign",
    "TfdetGenerateProposals": "proposals",
    "NonMaxSuppressionV3": "detections (decode, NMS)",
    "NonMaxSuppressionV4": "detections (decode, NMS)",
    "NonMaxSuppressionV5": "detections (decode, NMS)",
    "CombinedNonMaxSuppression": "detections (decode, NMS)",
}
# The executor's own events and ops that only call others (their time is their callees'),
# left out of the sums.
CONTAINERS = {"PartitionedCall", "StatefulPartitionedCall", "While", "If", "StatelessIf",
              "StatelessWhile", "Case", "_Retval", "_Arg", "Process", "Run"}


def stage_of(name, op_type=""):
  if op_type in OP_TYPES:
    return OP_TYPES[op_type]
  backward = name.startswith("gradient_tape/")
  scope = name[len("gradient_tape/"):] if backward else name
  for stage, pattern in STAGES:
    if re.search(pattern, scope):
      if backward and stage not in ("optimizer",):
        return f"backward: {stage}"
      return stage
  return "backward: other" if backward else "other"


def _op_events(logdir):
  """[(op name, op type, duration ps)] of the TF ops in the newest trace under logdir."""
  paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
  if not paths:
    raise RuntimeError(f"the profiler wrote no trace under {logdir}")
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as f:
    space.ParseFromString(f.read())
  events = []
  for plane in space.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    for line in plane.lines:
      for event in line.events:
        meta = plane.event_metadata[event.metadata_id].name
        # The executor's op events are "name:type".
        if ":" not in meta or meta.startswith(("tf_", "$")):
          continue
        name, _, op_type = meta.rpartition(":")
        if not op_type or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", op_type):
          continue
        events.append((name, op_type, event.duration_ps))
  return events


def graph_flops(fn):
  """(per-stage FLOPs Counter, number of ops whose FLOPs are unknown) of one call of the
  tf.function `fn` (no arguments), from its traced graph and TF's FLOP statistics (convs,
  matmuls and elementwise arithmetic; a multiply-add counts 2). Ops inside nested functions
  (while loops, map_fn: the per-detection keypoint decoding) are not counted."""
  graph = fn.get_concrete_function().graph
  per_stage, unknown = collections.Counter(), 0
  for op in graph.get_operations():
    try:
      value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
    except (ValueError, TypeError):  # a dynamic shape
      unknown += 1
      continue
    if value:
      per_stage[stage_of(op.name, op.type)] += value
  return per_stage, unknown


def profile(fn, steps):
  """(wall s per call, [(name, type, ps)] of `steps` traced calls) of a warmed-up fn."""
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
      tf.nest.map_structure(lambda x: x.numpy(), fn())
    wall = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    return wall, _op_events(logdir)


def table(title, wall, events, steps, dump_ops, flops=None):
  per_stage = collections.Counter()
  per_op = collections.Counter()
  for name, op_type, ps in events:
    if op_type in CONTAINERS:
      continue
    per_stage[stage_of(name, op_type)] += ps
    per_op[(name, op_type)] += ps
  total = sum(per_stage.values())
  lines = [f"### {title}", "",
           f"wall clock {wall * 1e3:.0f} ms per call; op time {total / 1e9 / steps:.0f} ms "
           f"per call (ops run side by side)", "",
           "| stage | op ms per call | share | GFLOPs |", "| --- | ---: | ---: | ---: |"]
  flops = flops or collections.Counter()
  for stage, ps in per_stage.most_common():
    gflops = f"{flops[stage] / 1e9:.1f}" if flops[stage] else "-"
    lines.append(f"| {stage} | {ps / 1e9 / steps:.1f} | {100 * ps / total:.1f}% | {gflops} |")
  lines += ["", f"FLOPs counted in the graph: {sum(flops.values()) / 1e9:.1f} G"]
  if dump_ops:
    lines += ["", "| op | type | stage | ms per call |", "| --- | --- | --- | ---: |"]
    for (name, op_type), ps in per_op.most_common(dump_ops):
      lines.append(f"| {name} | {op_type} | {stage_of(name, op_type)} | {ps / 1e9 / steps:.1f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--row", default="e2e_mask_rcnn_R-50-FPN_1x",
                      help="a config of gin_configs/12_2017_baselines")
  parser.add_argument("--bindings", nargs="*", default=[], help="extra gin bindings")
  parser.add_argument("--batch", type=int, default=2, help="images of the training step")
  parser.add_argument("--size", type=int, nargs=2, default=(800, 1333),
                      help="the resized image (height width), padded to the canvas multiple")
  parser.add_argument("--steps", type=int, default=1, help="traced calls of each function")
  parser.add_argument("--dump_ops", type=int, default=0, help="also list the N costliest ops")
  args = parser.parse_args()

  gin_files.parse([f"12_2017_baselines/{args.row}.gin"], args.bindings)
  spec = gin_files.detector_spec()
  model = spec.build()
  divisor = gin_values.value("eval/pipeline.build_dataset.size_divisibility")
  padded = tuple(-(-s // divisor) * divisor for s in args.size)
  scene = rcnn_batches.scene(batch=args.batch, valid_hw=tuple(args.size))
  train_batch = rcnn_batches.tfdet_batch(scene, padded)
  infer_batch = rcnn_batches.tfdet_batch(
      dict({k: v[:1] for k, v in scene.items() if k != "valid_hw"}, valid_hw=scene["valid_hw"]),
      padded)
  model(infer_batch, training=False)
  # Learning rate 0: the step computes and applies its update (momentum and all), but the
  # weights stay put, so every timed step is the same step. With random weights the
  # activations are large and one real update makes the losses NaN.
  train_step = rcnn_batches.train_step(spec, model, train_batch, learning_rate=0.0)

  @tf.function
  def infer_step():
    return model(infer_batch, training=False)

  print(f"{args.row}, input {args.size[0]}x{args.size[1]} padded to {padded[0]}x{padded[1]}, "
        f"{os.cpu_count()} CPUs, TF {tf.__version__}, random weights\n")
  for title, fn in (("Inference, 1 image", infer_step),
                    (f"Training step, {args.batch} images", train_step)):
    fn()  # trace
    fn()  # warm up
    flops, unknown = graph_flops(fn)
    wall, events = profile(fn, args.steps)
    print(table(title, wall, events, args.steps, args.dump_ops, flops) + "\n", flush=True)
    if unknown:
      print(f"({unknown} ops of dynamic shape: FLOPs not counted)\n")


if __name__ == "__main__":
  main()
