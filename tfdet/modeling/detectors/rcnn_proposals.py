"""The R-CNN's proposal sources: its RPN, or the batch's precomputed proposals.

A proposal source gives the RoI heads their candidate boxes:
``proposals(features, inputs, image_info, training)`` returns a dict with
`outputs.PROPOSALS` [B, P, 4] (resized pixels, best first),
`outputs.PROPOSAL_SCORES` [B, P] and `outputs.NUM_PROPOSALS` [B] (valid
rows first), plus whatever its own losses need; ``losses(outputs, batch)``
returns its losses (none for precomputed proposals).

* `RpnProposals`: the RPN head on every level, Detectron's proposal
  generation (`tfdet.ops.proposals`). Its training targets (anchor labels and
  box targets, `tfdet.ops.rpn_targets`) need only the anchors and the ground
  truth, so they are assigned in `losses`, from the anchors in the outputs.
* `PrecomputedProposals`: Detectron's two-stage recipe (Fast R-CNN, and the
  Mask / Keypoint R-CNN rows with ``FASTER_RCNN: false``): the proposals the
  input pipeline read from the shards (`keys.PROPOSALS`, filled by
  `data_prep.add_proposals`); the model then has no RPN.
"""

import keras
import tensorflow as tf

from tfdet.data import keys
from tfdet.modeling import losses, xla
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors.config import RpnSettings
from tfdet.ops import anchors as anchor_ops
from tfdet.ops import proposals, rpn_targets

RPN_CLS_LOSS = "loss_rpn_cls"
RPN_BOX_LOSS = "loss_rpn_bbox"


class RpnProposals(keras.layers.Layer):
  """The RPN as a proposal source.

  Args:
    head: keras.Model from `tfdet.modeling.heads.rpn.build_rpn_head`.
    levels: feature names the RPN runs on, e.g. ("p2", ..., "p6") or ("res4",).
    strides: stride of each level.
    cell_anchors: [A, 4] cell anchors of each level.
    settings: `RpnSettings`.
    convention: box convention.
    sampling: "detectron" or "modern" anchor sampling (`rpn_targets`).
    implementation: "custom" ops or the pure-TF "reference".
  """

  def __init__(self, *, head, levels, strides, cell_anchors, settings=None,
               convention="detectron", sampling="detectron", implementation="custom",
               name="rpn", **kwargs):
    super().__init__(name=name, **kwargs)
    if not len(levels) == len(strides) == len(cell_anchors):
      raise ValueError("rpn levels, strides and cell_anchors need one entry per level")
    self.head = head
    self.levels = tuple(levels)
    self.strides = tuple(strides)
    self.cell_anchors = [tf.constant(c, tf.float32) for c in cell_anchors]
    self.settings = settings or RpnSettings()
    self.convention = convention
    self.sampling = sampling
    self.implementation = implementation
    self.jit_compile_inference = False  # set by the detector (`tfdet.modeling.xla`)
    self.built = True

  def dense(self, features, training=False):
    """Per level: the head's logits [B, H, W, A], deltas [B, H, W, 4A] and anchors [HWA, 4]."""
    logits, deltas, anchors = [], [], []
    for name, stride, cell in zip(self.levels, self.strides, self.cell_anchors, strict=True):
      if training:
        head = self.head(features[name])
      else:
        head = xla.inference_call(self.head, features[name],
                                  jit_compile=self.jit_compile_inference)
      logits.append(head[out.RPN_LOGITS])
      deltas.append(head[out.RPN_DELTAS])
      shape = tf.shape(features[name])
      anchors.append(anchor_ops.grid_anchors(cell, stride=stride, height=shape[1],
                                             width=shape[2]))
    return logits, deltas, anchors

  def proposals(self, features, inputs, image_info, training):
    """RPN outputs of every anchor and the proposals (module docstring)."""
    del inputs
    logits, deltas, anchors = self.dense(features, training=training)
    batch = tf.shape(image_info)[0]
    s = self.settings
    rois, scores, num = proposals.generate_proposals(
        [tf.sigmoid(tf.cast(x, tf.float32)) for x in logits],
        [tf.cast(d, tf.float32) for d in deltas], anchors, image_info[:, :3],
        pre_nms_top_n=s.pre_nms_top_n_train if training else s.pre_nms_top_n_test,
        post_nms_top_n=s.post_nms_top_n_train if training else s.post_nms_top_n_test,
        nms_threshold=s.nms_threshold, min_size=s.min_size, convention=self.convention,
        collect_top_n=s.collect_top_n_train if training else s.collect_top_n_test,
        collect_per_batch=s.collect_per_batch_train and training,
        implementation=self.implementation)
    return {
        out.RPN_LOGITS: tf.concat([tf.reshape(x, [batch, -1]) for x in logits], axis=1),
        out.RPN_DELTAS: tf.concat([tf.reshape(d, [batch, -1, 4]) for d in deltas], axis=1),
        out.ANCHORS: tf.concat(anchors, axis=0),
        out.PROPOSALS: tf.stop_gradient(rois),
        out.PROPOSAL_SCORES: tf.stop_gradient(scores),
        out.NUM_PROPOSALS: num,
    }

  def losses(self, outputs, batch, *, seed=None):
    """Detectron's RPN losses; the anchor targets are assigned here.

    Args:
      outputs: the model's training outputs (RPN_LOGITS, RPN_DELTAS, ANCHORS).
      batch: the input batch (`keys`).
      seed: None or a stateless seed for the anchor sampling.
    """
    s = self.settings
    gt_valid = tf.cast(batch[keys.GT_VALID], tf.bool) & ~tf.cast(batch[keys.GT_IS_CROWD],
                                                                  tf.bool)
    targets = rpn_targets.rpn_targets(
        outputs[out.ANCHORS], batch[keys.GT_BOXES], gt_valid, batch[keys.IMAGE_INFO][:, :2],
        convention=self.convention, positive_overlap=s.positive_overlap,
        negative_overlap=s.negative_overlap, batch_size_per_image=s.batch_size_per_image,
        positive_fraction=s.positive_fraction, straddle_thresh=s.straddle_thresh,
        sampling=self.sampling, seed=seed)
    cls_loss, box_loss = losses.rpn_losses(
        outputs[out.RPN_LOGITS], outputs[out.RPN_DELTAS], targets.labels, targets.box_targets,
        batch_size_per_image=s.batch_size_per_image, multilevel=len(self.levels) > 1,
        beta=s.box_loss_beta)
    return {RPN_CLS_LOSS: cls_loss, RPN_BOX_LOSS: box_loss}


class PrecomputedProposals(keras.layers.Layer):
  """The batch's precomputed proposals as the proposal source (Detectron's two-stage recipe).

  The input pipeline must be built ``with_proposals`` (`keys.PROPOSALS`,
  `keys.PROPOSAL_SCORES`, `keys.PROPOSALS_VALID`, in resized pixels after
  Detectron's clipping, de-duplication and small-box removal). The valid
  rows are moved first, in the file's order.
  """

  def __init__(self, name="precomputed_proposals", **kwargs):
    super().__init__(name=name, **kwargs)
    self.built = True

  def proposals(self, features, inputs, image_info, training):
    """The batch's proposals (module docstring)."""
    del features, image_info, training
    if keys.PROPOSALS not in inputs:
      raise ValueError(
          f"this model reads precomputed proposals, but the batch has no {keys.PROPOSALS!r}: "
          "build the input pipeline with with_proposals=True from shards that "
          "data_prep.add_proposals filled")
    valid = tf.cast(inputs[keys.PROPOSALS_VALID], tf.bool)
    order = tf.argsort(tf.cast(~valid, tf.int32), axis=1, stable=True)  # valid rows first
    boxes = tf.gather(tf.cast(inputs[keys.PROPOSALS], tf.float32), order, batch_dims=1)
    scores = tf.gather(tf.cast(inputs[keys.PROPOSAL_SCORES], tf.float32), order, batch_dims=1)
    num = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    keep = tf.range(tf.shape(boxes)[1])[None, :] < num[:, None]
    return {out.PROPOSALS: tf.where(keep[..., None], boxes, 0.0),
            out.PROPOSAL_SCORES: tf.where(keep, scores, 0.0), out.NUM_PROPOSALS: num}

  def losses(self, outputs, batch, *, seed=None):
    """No losses: the proposals are given."""
    del outputs, batch, seed
    return {}
