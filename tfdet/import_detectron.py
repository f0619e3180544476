r"""Converts a Detectron .pkl weight file into a tfdet checkpoint (entry point).

A trained model of Detectron's zoo, then evaluated (or exported) as tfdet's own::

  python -m tfdet.import_detectron --gin_file=models/mask_rcnn_fpn.gin \
      --pkl=model_final.pkl --output=/tmp/mask_rcnn_R-50-FPN_1x
  python -m tfdet.evaluate --gin_file=models/mask_rcnn_fpn.gin \
      --model_dir=/tmp/mask_rcnn_R-50-FPN_1x --annotations_file=...

An ImageNet backbone, to start training from (``train.run.init_checkpoint``)::

  python -m tfdet.import_detectron --gin_file=models/mask_rcnn_fpn.gin \
      --gin_file=backbones/X-101-64x4d.gin --pkl=X-101-64x4d.pkl \
      --output=/tmp/X-101-64x4d --backbone_only
  python -m tfdet.train ... --gin_param='train.run.init_checkpoint = "/tmp/X-101-64x4d"'

The model is the detector the gin files name (its `spec.DetectorSpec`, as
the other entry points build it); `tfdet.model_zoo.detectron_weights` maps
the file's blobs onto it by rule and writes the checkpoint: ``ckpt-0`` (the
training layout without optimizer state: evaluate, export and infer read it)
or, with --backbone_only, ``backbone-0`` (the backbone only). The output
folder also gets ``detectron_import.txt`` (the summary printed) and, when
the file holds one, Detectron's config as ``detectron_config.yaml``.

Nothing is written unless everything fits: the output folder must be new or
empty, the file must be a plain data pickle (`tfdet.safe_pickle`), the
configuration must feed the model Detectron's inputs (BGR minus its pixel
means, unscaled: conv1 is not permuted), and every blob the model needs must
be in the file with its shape, every blob of the file used or ignorable
(each named otherwise). Exit codes: 0 written, 1 a named error.
"""

import os
import sys

from tfdet import console

if __name__ == "__main__":  # before TensorFlow is imported
  console.hide_tf_cpp_logs()

from absl import app, flags, logging  # noqa: E402

from tfdet import gin_files, safe_pickle  # noqa: E402
from tfdet.data import pipeline, transforms  # noqa: E402
from tfdet.model_zoo import detectron_weights  # noqa: E402

FLAGS = flags.FLAGS
SUMMARY_FILE = "detectron_import.txt"
CONFIG_FILE = "detectron_config.yaml"
# Bad input, each named: a missing file, a gin error, a weight file that does not fit the
# model (DetectronWeightsError, UnsupportedModelError: ValueErrors), an unsafe or broken
# pickle, an output folder that holds files.
ERRORS = (FileNotFoundError, ValueError, NameError, safe_pickle.UnsafePickleError,
          safe_pickle.CorruptPickleError, detectron_weights.OutputExistsError)


def define_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin files (relative to gin_configs/ or paths).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied after the files.")
  flags.DEFINE_string("pkl", None, "Detectron weight file (.pkl).")
  flags.DEFINE_string("output", None, "New (or empty) folder for the checkpoint.")
  flags.DEFINE_bool("backbone_only", False, "Convert the backbone only (ImageNet files): write "
                    "tf.train.Checkpoint(backbone=...) for train.run.init_checkpoint.")
  flags.mark_flags_as_required(["pkl", "output"])
  console.define_flags()


def check_input_normalization():
  """Refuses eval-pipeline bindings that normalize images otherwise than Detectron.

  The converted conv1 expects BGR pixels minus `transforms.DETECTRON_PIXEL_MEANS`,
  unscaled (the pipeline's defaults).
  """
  wanted = {"channel_order": "bgr", "pixel_means": transforms.DETECTRON_PIXEL_MEANS,
            "pixel_stds": (1.0, 1.0, 1.0)}
  for scope in (None, "eval"):
    bound = gin_files.bindings(pipeline.build_dataset, scope=scope)
    for name, value in wanted.items():
      if name in bound and (tuple(bound[name]) if name != "channel_order" else bound[name]) \
          != value:
        selector = f"{scope + '/' if scope else ''}pipeline.build_dataset.{name}"
        raise ValueError(f"the config binds {selector} = {bound[name]!r}: Detectron's weights "
                         f"expect {name} {value!r} (BGR minus its pixel means, unscaled)")


def run(*, gin_file, gin_param, pkl, output, backbone_only=False):
  """Converts `pkl` for the model the gin files name and writes it to `output`.

  Returns:
    the summary (also written as ``output/detectron_import.txt``).

  Raises:
    one of `ERRORS`, naming the flag, file or blob.
  """
  detectron_weights.check_output(output)  # before any slow work
  if not os.path.isfile(pkl):
    raise FileNotFoundError(f"--pkl {pkl}: no such file")
  gin_files.parse(gin_file, gin_param)
  detector = gin_files.detector_spec()
  check_input_normalization()
  blobs, cfg = detectron_weights.load_weights_file(pkl)
  model = detector.build_model(implementation="reference")
  report = detectron_weights.convert(model, blobs, backbone_only=backbone_only, source=pkl)
  files = {}
  if cfg is not None:
    files[CONFIG_FILE] = cfg
  what = "backbone" if backbone_only else "model"
  summary = report.summary()
  files[SUMMARY_FILE] = summary + "\n"
  path = detectron_weights.write_checkpoint(model, output, backbone_only=backbone_only,
                                            files=files)
  return f"{summary}\nwrote the {what} checkpoint {path}"


def main(argv):
  del argv
  console.configure(FLAGS.tf_logs)
  try:
    summary = run(gin_file=FLAGS.gin_file, gin_param=FLAGS.gin_param, pkl=FLAGS.pkl,
                  output=FLAGS.output, backbone_only=FLAGS.backbone_only)
  except ERRORS as e:
    logging.error("%s: %s", type(e).__name__, e)
    return 1
  print(summary)
  return 0


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
