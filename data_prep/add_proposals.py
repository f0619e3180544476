r"""Adds precomputed proposals (Detectron's format) to existing TFRecord shards.

Reads a proposal file and writes copies of the given shards, under the same
names in another folder, with `schema.PROPOSAL_BOXES` /
`schema.PROPOSAL_SCORES` set (replacing any there). Two formats:

* a pickle, as Detectron writes them (Python 2 pickles included): a dict with
  ``boxes`` (a list of ``[n_i, 4]`` arrays of ``(x1, y1, x2, y2)`` in
  original-image pixels), ``scores`` (a list of ``[n_i]``) and ``ids`` (image
  ids; Detectron's older ``indexes`` key is accepted too). It is read with
  `tfdet.safe_pickle`, which admits only dicts, lists, tuples, strings,
  numbers and numpy arrays and refuses anything that would run code.
* an ``.npz`` of plain arrays (`tfdet.data.proposal_files`; an RPN's evaluation
  writes one; `save_proposals_npz` there writes any): ``boxes``
  ``[N, 4]`` and ``scores`` ``[N]`` of all images concatenated, ``ids``
  ``[I]`` and ``counts`` ``[I]`` (how many rows each image has, in order).
  It is read with ``allow_pickle=False``: object arrays are refused.

Boxes are stored as the file gives them; with ``top_k`` > 0 each image keeps
its ``top_k`` highest-scoring proposals (stable sort by descending score;
Detectron's files are already sorted and it keeps the first ``top_k``).

Usage:
  python -m data_prep.add_proposals --proposals_file=rpn_proposals.pkl \
    --input_pattern='tfrecords/val/*.tfrecord' --output_dir=tfrecords/val_props --top_k=2000
"""

import glob
import os
import shutil
import zipfile

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from data_prep import shard_writer
from data_prep.coco_annotations import BadInputError
from tfdet import safe_pickle
from tfdet.data import schema
from tfdet.data.proposal_files import NPZ_KEYS


def _load_npz(path):
  """The plain-array .npz layout as the pickle layout's lists."""
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in NPZ_KEYS if k not in npz.files]
      if missing:
        raise BadInputError(f"{path}: .npz proposal file lacks {missing} (has {sorted(npz.files)};"
                            f" needs {list(NPZ_KEYS)}: boxes [N, 4], scores [N], ids [I], "
                            "counts [I])")
      data = {}
      for key in NPZ_KEYS:
        try:
          data[key] = npz[key]
        except ValueError as e:
          if "allow_pickle" not in str(e):
            raise BadInputError(f"{path}: array {key!r} is unreadable ({e})") from None
          raise BadInputError(
              f"{path}: array {key!r} holds Python objects, which are refused (loading them can "
              f"run code); write boxes [N, 4], scores [N], ids [I] and counts [I] as plain "
              f"arrays (tfdet.data.proposal_files.save_proposals_npz) ({e})") from None
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise BadInputError(f"{path}: not a readable .npz file ({e})") from None
  counts = data["counts"].astype(np.int64).reshape(-1)
  if len(counts) != len(data["ids"].reshape(-1)) or counts.sum() != len(data["boxes"]) or (
      counts < 0).any():
    raise BadInputError(f"{path}: counts {counts.tolist()[:10]} do not split "
                        f"{len(data['boxes'])} boxes over {data['ids'].size} ids")
  splits = np.cumsum(counts)[:-1]
  boxes, scores = data["boxes"], data["scores"]
  if len(scores) != len(boxes):
    raise BadInputError(f"{path}: {len(boxes)} boxes but {len(scores)} scores")
  return {"boxes": np.split(boxes, splits) if len(counts) else [],
          "scores": np.split(scores, splits) if len(counts) else [],
          "ids": data["ids"].reshape(-1).tolist()}


def load_proposals(path):
  """Loads a proposal file into {image_id: (boxes [n, 4] float32, scores [n] float32)}.

  Raises:
    BadInputError: a pickle that names anything but data (it is not run), a
      truncated or corrupt file, an .npz holding object arrays, missing keys,
      lists of different lengths, duplicate ids, boxes not [n, 4] or scores not [n].
  """
  if path.endswith(".npz"):
    data = _load_npz(path)
  else:
    try:
      data = safe_pickle.load(path)
    except safe_pickle.UnsafePickleError as e:
      raise BadInputError(f"{e} (the file was not loaded)") from None
    except safe_pickle.CorruptPickleError as e:
      raise BadInputError(str(e)) from None
    except OSError as e:
      raise BadInputError(f"{path}: cannot read the proposal file ({e})") from None
  if not isinstance(data, dict):
    raise BadInputError(f"{path}: proposal file holds a {type(data).__name__}, need a dict with "
                        "boxes, scores and ids")
  id_key = "ids" if "ids" in data else "indexes"
  for key in ("boxes", "scores", id_key):
    if key not in data:
      raise BadInputError(f"{path}: proposal file lacks {key!r} (has {sorted(data)})")
  boxes, scores, ids = data["boxes"], data["scores"], data[id_key]
  if not len(boxes) == len(scores) == len(ids):
    raise BadInputError(f"{path}: {len(boxes)} box arrays, {len(scores)} score arrays and "
                        f"{len(ids)} ids; they must match")
  out = {}
  for b, s, image_id in zip(boxes, scores, ids, strict=True):
    image_id = int(image_id)
    b = np.asarray(b, np.float32)
    s = np.asarray(s, np.float32)
    if b.size == 0:
      b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
      raise BadInputError(f"{path}: image id {image_id}: boxes have shape {b.shape}, "
                          f"need [n, 4]")
    if s.reshape(-1).shape[0] != b.shape[0] or s.ndim > 2:
      raise BadInputError(f"{path}: image id {image_id}: {b.shape[0]} boxes but scores "
                          f"have shape {s.shape}")
    if image_id in out:
      raise BadInputError(f"{path}: image id {image_id} appears twice")
    out[image_id] = (b, s.reshape(-1))
  return out


def select_top_k(boxes, scores, top_k):
  """The top_k highest-scoring proposals (stable), or all when top_k <= 0."""
  if top_k <= 0 or len(scores) <= top_k:
    return boxes, scores
  order = np.argsort(-scores, kind="stable")[:top_k]
  return boxes[order], scores[order]


def with_proposals(serialized, proposals, *, top_k=0, allow_missing=False, source=""):
  """Returns a serialized example with the image's proposals set.

  Args:
    serialized: bytes of a `tf.train.Example` in `schema`.
    proposals: {image_id: (boxes, scores)} from `load_proposals`.
    top_k: keep at most this many per image (0: all).
    allow_missing: write empty proposals for images the file lacks instead of raising.
    source: the proposal file, for error messages.
  """
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature
  image_id = feature[schema.IMAGE_ID].int64_list.value[0]
  if image_id in proposals:
    boxes, scores = select_top_k(*proposals[image_id], top_k)
  elif allow_missing:
    boxes, scores = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
  else:
    raise BadInputError(f"{source}: no proposals for image id {image_id}")
  for key, values in ((schema.PROPOSAL_BOXES, boxes), (schema.PROPOSAL_SCORES, scores)):
    feature[key].Clear()
    feature[key].float_list.value.extend(np.asarray(values, np.float32).reshape(-1).tolist())
  return example.SerializeToString()


def add_proposals(proposals_file, input_files, output_dir, *, top_k=0, allow_missing=False):
  """Writes copies of ``input_files`` into ``output_dir`` with proposals added.

  Each output shard is written atomically; label_map.json is copied when it
  sits beside the first input shard.

  Returns:
    {"records": n, "missing": images written with empty proposals, "shards": [...]}.
  """
  input_files = sorted(input_files)
  if not input_files:
    raise BadInputError("add_proposals: no input shards")
  out_paths = [os.path.join(output_dir, os.path.basename(p)) for p in input_files]
  for src, dst in zip(input_files, out_paths, strict=True):
    if os.path.abspath(src) == os.path.abspath(dst):
      raise ValueError(f"add_proposals: output {dst} would overwrite its input")
  proposals = load_proposals(proposals_file)
  os.makedirs(output_dir, exist_ok=True)
  summary = {"records": 0, "missing": 0, "shards": []}
  for src, dst in zip(input_files, out_paths, strict=True):
    def records(src=src):
      for record in tf.data.TFRecordDataset(src).as_numpy_iterator():
        image_id = tf.train.Example.FromString(record).features.feature[
            schema.IMAGE_ID].int64_list.value[0]
        summary["missing"] += image_id not in proposals
        yield with_proposals(record, proposals, top_k=top_k, allow_missing=allow_missing,
                             source=proposals_file)
    summary["records"] += shard_writer.write_shard_atomic(dst, records())
    summary["shards"].append(dst)
    logging.info("wrote %s", dst)
  label_map = os.path.join(os.path.dirname(input_files[0]), schema.LABEL_MAP_FILE)
  if os.path.exists(label_map):
    shutil.copyfile(label_map, os.path.join(output_dir, schema.LABEL_MAP_FILE))
  logging.info("added proposals to %d records (%d without proposals)", summary["records"],
               summary["missing"])
  return summary


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("proposals_file", None, "Detectron proposals: .pkl or .npz.")
  flags.DEFINE_string("input_pattern", None, "Glob of the input shards.")
  flags.DEFINE_string("output_dir", None, "Folder of the output shards (not the input's).")
  flags.DEFINE_integer("top_k", 0, "Proposals kept per image (0: all).")
  flags.DEFINE_bool("allow_missing", False, "Write empty proposals for images the file lacks.")
  flags.mark_flags_as_required(["proposals_file", "input_pattern", "output_dir"])


def main(argv):
  del argv
  try:
    add_proposals(FLAGS.proposals_file, glob.glob(FLAGS.input_pattern), FLAGS.output_dir,
                  top_k=FLAGS.top_k, allow_missing=FLAGS.allow_missing)
  except BadInputError as e:
    logging.error("bad input: %s", e)
    raise SystemExit(1) from e


if __name__ == "__main__":
  _define_flags()
  app.run(main)
