"""Runs a SavedModel's three signatures in a fresh Python process without tfdet.

The process gets an empty PYTHONPATH (so neither tfdet nor its op library can
be imported), loads the SavedModel, runs ``serving_default`` (uint8 batch),
``serving_bytes`` (PNG bytes) and ``serving_tf_example`` (a serialized
tf.Example) on one image, and writes their outputs. A test adds its own
checks: `prelude` runs first (it may set names), `report` is a Python
expression for a dict printed as json, evaluated at the end where ``loaded``,
``results`` and ``sys`` are defined.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

_SIGNATURES = """
loaded = tf.saved_model.load(export_dir)
image = np.load(image_path)
encoded = tf.io.encode_png(image)
example = tf.train.Example(features=tf.train.Features(feature={
    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded.numpy()]))}))
results = {
    "serving_default": loaded.signatures["serving_default"](images=tf.constant(image[None])),
    "serving_bytes": loaded.signatures["serving_bytes"](encoded_images=encoded[None]),
    "serving_tf_example": loaded.signatures["serving_tf_example"](
        serialized_examples=tf.constant([example.SerializeToString()])),
}
np.savez(out_path, **{f"{s}/{k}": v.numpy() for s, r in results.items() for k, v in r.items()})
"""


def run_signatures(export_dir, image, tmp_dir, *, prelude="", report="{}"):
  """Returns (report dict, with "tfdet_imported" added; {"<signature>/<output>": array})."""
  script = "\n".join([
      "import json, sys", "import numpy as np", "import tensorflow as tf",
      "export_dir, image_path, out_path = sys.argv[1:4]", textwrap.dedent(prelude), _SIGNATURES,
      f"report = dict({report})",
      'report["tfdet_imported"] = any(m.startswith("tfdet") for m in sys.modules)',
      "print(json.dumps(report))"])
  image_path = os.path.join(tmp_dir, "image.npy")
  out_path = os.path.join(tmp_dir, "out.npz")
  np.save(image_path, image)
  env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", script, export_dir, image_path, out_path],
                        capture_output=True, text=True, cwd=str(tmp_dir), env=env, timeout=240,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), dict(np.load(out_path))
