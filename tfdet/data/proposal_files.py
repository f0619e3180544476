"""The plain-array proposal file: what an RPN's evaluation writes and
`data_prep.add_proposals` reads into shards (Detectron's rpn_proposals.pkl, without
the pickle).

An ``.npz`` of four arrays: ``boxes`` [N, 4] float32 and ``scores`` [N] float32 of
every image's proposals concatenated, ``ids`` [I] int64 image ids and ``counts``
[I] int64 (how many rows each image has, in order). Boxes are (x1, y1, x2, y2) in
original-image pixels in Detectron's inclusive convention (x2 is the last pixel),
each image's in score order, as Detectron's files hold them.
"""

import os

import numpy as np

NPZ_KEYS = ("boxes", "scores", "ids", "counts")


def save_proposals_npz(path, boxes, scores, ids):
  """Writes per-image proposals (module docstring); the file appears complete or not at all.

  Args:
    path: the .npz to write.
    boxes: list of [n_i, 4] arrays, one per image.
    scores: list of [n_i] arrays.
    ids: list of image ids, in the same order.
  """
  boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
  partial = f"{path}.partial.npz"  # np.savez appends .npz to a name without it
  np.savez(partial, boxes=np.concatenate(boxes or [np.zeros((0, 4), np.float32)]),
           scores=np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in scores]
                                 or [np.zeros((0,), np.float32)]),
           ids=np.asarray(ids, np.int64), counts=np.asarray([len(b) for b in boxes], np.int64))
  os.replace(partial, path)
