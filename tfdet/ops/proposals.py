"""RPN proposal generation: Detectron's GenerateProposals + FPN collection.

For each image and pyramid level (M = H * W * A anchors):

1. candidates with a non-finite score are dropped;
2. the ``pre_nms_top_n`` highest scores are kept (0: all), in descending
   score, equal scores ordered by lower flat (y, x, a) index first;
3. the deltas (dx, dy, dw, dh) are applied to the anchors with weights
   (1, 1, 1, 1) and log-size deltas clipped at ``bbox_xform_clip``, and the
   boxes are clipped to the image (``tfdet.ops.boxes`` conventions); a
   candidate whose deltas, anchor or decoded box is not finite is dropped;
4. Detectron's ``_filter_boxes``: "detectron" keeps boxes with
   ``(x2 - x1) / scale + 1 >= max(min_size, 1)`` (and likewise for y),
   "modern" those with ``(x2 - x1) / scale > min_size`` (detectron2's
   non-empty rule); both also need the box centre inside the image.
   ``min_size`` is in original-image pixels (``scale`` from image_info);
5. greedy NMS (suppress IoU >= ``nms_threshold`` in "detectron", as its
   cython nms, IoU > ``nms_threshold`` in "modern"), keeping at most
   ``post_nms_top_n`` (0: all).

Collection over levels: per image, the ``collect_top_n`` best proposals
(``collect_per_batch=False``); or, as in Detectron's FPN training (its issue
459), the ``collect_top_n`` best of the whole batch, each image keeping its
share (``collect_per_batch=True``). Rows are in descending score, ties by
(image, level, NMS rank); the outputs are zero-padded.

An image whose ``image_info`` is not all positive and finite gets no
proposals. ``implementation="custom"`` runs the compiled op
(``TfdetGenerateProposals``, CPU and CUDA); ``"reference"`` the pure-TF
`tfdet.ops.proposals_ref` (same results up to float rounding). Proposals are
not differentiated (Detectron does not back-propagate through them).
"""

import tensorflow as tf

from tfdet.ops import custom_ops, proposals_ref
from tfdet.ops.boxes import BBOX_XFORM_CLIP, box_offset

tf.no_gradient("TfdetGenerateProposals")


def _as_list(x, name):
  if isinstance(x, (list, tuple)):
    return [tf.convert_to_tensor(v, tf.float32) for v in x]
  return [tf.convert_to_tensor(x, tf.float32)]


def check_proposal_args(*, pre_nms_top_n, post_nms_top_n, nms_threshold, min_size,
                        collect_top_n, convention):
  """Raises ValueError naming the first bad keyword argument."""
  for name, value in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n),
                      ("collect_top_n", collect_top_n)):
    if int(value) != value or value < 0:
      raise ValueError(f"{name} must be an int >= 0, got {value!r}")
  if not 0.0 <= nms_threshold <= 1.0:
    raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold!r}")
  if not 0.0 <= min_size < float("inf"):
    raise ValueError(f"min_size must be finite and >= 0, got {min_size!r}")
  box_offset(convention)


def generate_proposals(scores, deltas, anchors, image_info, *, pre_nms_top_n, post_nms_top_n,
                       nms_threshold=0.7, min_size=0.0, convention,
                       bbox_xform_clip=BBOX_XFORM_CLIP, collect_top_n,
                       collect_per_batch=False, implementation="custom"):
  """Generates and collects RPN proposals of one or more levels.

  Args:
    scores: list of L tensors [B, H_l, W_l, A] float32 objectness scores
      (any monotonic score; Detectron uses sigmoid probabilities). A single
      tensor is taken as one level (C4 models).
    deltas: list of L tensors [B, H_l, W_l, A * 4] float32 (dx, dy, dw, dh)
      per anchor.
    anchors: list of L tensors [H_l * W_l * A, 4] float32 (x1, y1, x2, y2),
      ordered (y, x, a) (`tfdet.ops.anchors.grid_anchors`).
    image_info: [B, 3] float32 (height, width, scale) of the resized, unpadded
      image; scale = resized / original size.
    pre_nms_top_n: int >= 0, candidates per image per level before NMS
      (0: all).
    post_nms_top_n: int >= 0, proposals per image per level after NMS
      (0: all).
    nms_threshold: float in [0, 1].
    min_size: float >= 0, minimum box side in original-image pixels.
    convention: "detectron" ("+1" widths) or "modern".
    bbox_xform_clip: float, upper bound of the dw / dh deltas.
    collect_top_n: int >= 0, proposals kept per image (per batch if
      collect_per_batch); also the static output size.
    collect_per_batch: bool, see the module docstring.
    implementation: "custom" (compiled op) or "reference" (pure TF).

  Returns:
    rois: [B, collect_top_n, 4] float32, rows in descending score.
    roi_scores: [B, collect_top_n] float32.
    num_rois: [B] int32, the number of valid rows per image.
    No gradient flows through them (in either implementation).
  """
  custom_ops.check_implementation(implementation)
  check_proposal_args(pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n,
                      nms_threshold=nms_threshold, min_size=min_size,
                      collect_top_n=collect_top_n, convention=convention)
  scores = _as_list(scores, "scores")
  deltas = _as_list(deltas, "deltas")
  anchors = _as_list(anchors, "anchors")
  if not len(scores) == len(deltas) == len(anchors):
    raise ValueError(f"scores, deltas and anchors need one entry per level; got "
                     f"{len(scores)}, {len(deltas)}, {len(anchors)}")
  image_info = tf.convert_to_tensor(image_info, tf.float32)
  kwargs = dict(pre_nms_top_n=int(pre_nms_top_n), post_nms_top_n=int(post_nms_top_n),
                nms_threshold=float(nms_threshold), min_size=float(min_size),
                bbox_xform_clip=float(bbox_xform_clip), collect_top_n=int(collect_top_n),
                collect_per_batch=bool(collect_per_batch))
  if implementation == "reference":
    # No gradient, as the compiled op (which registers none).
    return tuple(tf.stop_gradient(t) for t in proposals_ref.generate_proposals_ref(
        scores, deltas, anchors, image_info, convention=convention, **kwargs))
  rois, roi_scores, num_rois = custom_ops.load().tfdet_generate_proposals(
      scores=scores, deltas=deltas, anchors=anchors, image_info=image_info,
      legacy_plus_one=box_offset(convention) == 1.0, **kwargs)
  return rois, roi_scores, num_rois
