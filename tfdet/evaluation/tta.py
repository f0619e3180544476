"""Test-time augmentation (Detectron's TEST.BBOX_AUG, TEST.MASK_AUG, TEST.KPS_AUG).

Detectron's rule (``core/test.py``, im_detect_bbox_aug and its mask and
keypoint twins), for each image:

1. Boxes. The box stage (RPN, box head, per-class decoding, clipping; no NMS)
   runs under each transform of the ORIGINAL image: a horizontal flip at the
   test scale (H_FLIP), every extra shorter side of SCALES with the longer
   side capped at MAX_SIZE and, with SCALE_H_FLIP, its flip, and finally the
   identity at TEST.SCALE / TEST.MAX_SIZE. Each transform's per-class boxes
   are mapped back to original pixels (flipped ones un-flipped with
   ``x -> W - 1 - x``, "modern" ``W - x``) and the (scores, boxes) of every
   proposal of every transform are merged: SCORE_HEUR = COORD_HEUR = "UNION"
   stacks them. The model's own post-processing then runs once on the union:
   per-class NMS, score threshold, detection limit, and soft-NMS / box voting
   when its settings have them (the zoo's TTA config enables TEST.BBOX_VOTE).
2. Masks. For the final detections, the mask head runs under each mask
   transform (identity first, then H_FLIP, SCALES and their flips), with the
   boxes mapped into that transform's image; masks from flipped images are
   flipped back, and the per-transform probabilities of each detection's
   class are combined by HEUR: "SOFT_AVG" (mean), "SOFT_MAX" (max) or
   "LOGIT_AVG" (sigmoid of the mean logit). Without MASK_AUG the identity
   transform alone gives the masks. They are pasted as without TTA.
3. Keypoints, the same way on the keypoint heatmaps: flipped heatmaps are
   mirrored and their left/right keypoints swapped, then "HM_AVG" (mean) or
   "HM_MAX" (max), optionally size-dependent (SCALE_SIZE_DEP: objects with
   a box area below AREA_TH ignore the transforms that downscale the image,
   larger ones those that upscale it).

Differences from Detectron:

* "AVG" and "ID" box heuristics are refused: they need the same proposals
  under every transform, which Detectron itself only allows for models with
  precomputed proposals (it asserts "UNION" for Faster R-CNN); every tfdet
  R-CNN has an RPN. Aspect-ratio transforms (ASPECT_RATIOS) and the
  size-dependent box and mask options (which Detectron does not implement)
  are not offered; no model-zoo configuration uses them.
* "LOGIT_AVG" averages the mask head's logits; Detectron recovers them from
  the probabilities as ``log(p / (1 - p))`` with p floored at 1e-20, which
  saturates where the float32 probability rounds to 0 or 1.
* Every transformed image is padded like the eval pipeline pads an image of
  its scale (its aspect group's canvas, `transforms.canvas_shapes`), rather
  than to its own size rounded to the stride as Detectron's batch of one;
  the identity transform therefore sees exactly the eval pipeline's input.
* The transformed images are made by tfdet's eval preprocessing
  (`tfdet.data.transforms`: bilinear resize to round(size * im_scale), BGR
  minus the pixel means), as without TTA.

Use: `build_tta_dataset` reads the records (batch size 1, file order) and
makes every transform's input; `run_tta` is a `runner.evaluate` run
function on that data set (bind its keyword arguments with functools.partial).
The merge rules are `tfdet.evaluation.tta_merge`.

Keypoints: a model that has keypoint heatmaps exposes
``keypoint_heatmaps(inputs, boxes) -> [B, D, M, M, J]`` heatmap logits of
given boxes (original pixels of the given, possibly flipped, image) and
``keypoints_from_heatmaps(heatmaps, boxes) -> [B, D, J, 3]``
(`outputs.DETECTION_KEYPOINTS`); `run_tta` merges the heatmaps and converts
the result with the latter. GeneralizedRCNN has no keypoint head yet.
"""

import dataclasses
import inspect

import numpy as np
import tensorflow as tf

from tfdet.data import decoder, keys, pipeline, schema, shard_files, transforms
from tfdet.evaluation import runner, tta_merge
from tfdet.modeling.detectors import outputs as out
from tfdet.ops import boxes as box_ops

BOX_HEURISTICS = ("UNION",)

INPUTS = "inputs"  # the data set's dict of transform key -> batch of one image
# The annotations of the records are not used; decoding keeps one vertex per instance.
_POLYGON_VERTICES = 1


@dataclasses.dataclass(frozen=True)
class Transform:
  """One test-time transform of the original image.

  Attributes:
    scale: target shorter side.
    max_size: cap on the longer side.
    flip: horizontal flip (of the original image, before resizing).
  """
  scale: float
  max_size: float
  flip: bool = False

  @property
  def key(self):
    """The name of its input in `build_tta_dataset`'s elements."""
    return f"{self.scale:g}x{self.max_size:g}" + ("_flip" if self.flip else "")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """The eval pipeline's preprocessing (`pipeline.build_dataset(mode="eval")`'s arguments).

  Attributes:
    scale: TEST.SCALE, the shorter side of the identity transform.
    max_size: TEST.MAX_SIZE.
    size_divisibility, aspect_grouping: padding (`transforms.canvas_shapes`).
    channel_order, pixel_means, pixel_stds: `transforms.normalize_image`.
  """
  scale: float = 800.0
  max_size: float = 1333.0
  size_divisibility: int = 32
  aspect_grouping: bool = True
  channel_order: str = "bgr"
  pixel_means: tuple = transforms.DETECTRON_PIXEL_MEANS
  pixel_stds: tuple = (1.0, 1.0, 1.0)

  @classmethod
  def from_pipeline_arguments(cls, **kwargs):
    """The preprocessing of `pipeline.build_dataset(mode="eval", **kwargs)`.

    Arguments not given take `build_dataset`'s defaults; the ones that do
    not concern the image (file_pattern, batch_size, ...) are ignored.
    """
    params = inspect.signature(pipeline.build_dataset).parameters

    def get(name):
      return kwargs.get(name, params[name].default)

    scales = tuple(get("scales"))
    if len(scales) != 1:
      raise ValueError(f"eval uses one scale, got {scales}")
    return cls(scale=float(scales[0]), max_size=float(get("max_size")),
               size_divisibility=int(get("size_divisibility")),
               aspect_grouping=bool(get("aspect_grouping")),
               channel_order=get("channel_order"), pixel_means=tuple(get("pixel_means")),
               pixel_stds=tuple(get("pixel_stds")))

  @property
  def identity(self):
    """The identity transform (TEST.SCALE, TEST.MAX_SIZE)."""
    return Transform(self.scale, self.max_size)


@dataclasses.dataclass(frozen=True)
class TTAConfig:
  """Test-time augmentation settings, Detectron's TEST.*_AUG names in lower case.

  Box settings (TEST.BBOX_AUG): bbox_aug (ENABLED), h_flip, scales,
  max_size, scale_h_flip, score_heur, coord_heur. Mask settings
  (TEST.MASK_AUG): mask_aug (ENABLED), mask_h_flip, mask_scales,
  mask_max_size, mask_scale_h_flip (None: the box setting of the same name),
  mask_heur. Keypoint settings (TEST.KPS_AUG) likewise with the kps_ prefix,
  plus kps_heur, kps_scale_size_dep and kps_area_th. With an augmentation
  disabled its stage runs on the identity transform only.

  Detectron's defaults, except that the stages are enabled (the transforms
  are still empty). Its TTA model-zoo row (e2e_mask_rcnn_X-152-32x8d-FPN-IN5k)
  uses h_flip, scales (400, 500, 600, 700, 900, 1000, 1100, 1200),
  max_size 2000 and scale_h_flip for boxes and masks, SOFT_AVG, and
  TEST.BBOX_VOTE at 0.9 (the model's RoiHeadSettings.box_voting_threshold).
  """
  bbox_aug: bool = True
  h_flip: bool = False
  scales: tuple = ()
  max_size: float = 4000.0
  scale_h_flip: bool = False
  score_heur: str = "UNION"
  coord_heur: str = "UNION"
  mask_aug: bool = True
  mask_h_flip: bool | None = None
  mask_scales: tuple | None = None
  mask_max_size: float | None = None
  mask_scale_h_flip: bool | None = None
  mask_heur: str = "SOFT_AVG"
  kps_aug: bool = True
  kps_h_flip: bool | None = None
  kps_scales: tuple | None = None
  kps_max_size: float | None = None
  kps_scale_h_flip: bool | None = None
  kps_heur: str = "HM_AVG"
  kps_scale_size_dep: bool = False
  kps_area_th: float = 180.0 ** 2

  def __post_init__(self):
    for name in ("scales", "mask_scales", "kps_scales"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(float(s) for s in value))
    for name in ("score_heur", "coord_heur"):
      value = getattr(self, name)
      if value in ("AVG", "ID"):
        raise ValueError(
            f"TTAConfig.{name} = {value!r} needs the same proposals under every transform "
            "(Detectron allows it only for precomputed proposals); with an RPN only 'UNION' "
            "is supported")
      if value not in BOX_HEURISTICS:
        raise ValueError(f"TTAConfig.{name} must be one of {BOX_HEURISTICS}, got {value!r}")
    if self.mask_heur not in tta_merge.MASK_HEURISTICS:
      raise ValueError(f"TTAConfig.mask_heur must be one of {tta_merge.MASK_HEURISTICS}, "
                       f"got {self.mask_heur!r}")
    if self.kps_heur not in tta_merge.KEYPOINT_HEURISTICS:
      raise ValueError(f"TTAConfig.kps_heur must be one of {tta_merge.KEYPOINT_HEURISTICS}, "
                       f"got {self.kps_heur!r}")

  def _stage(self, prefix):
    """(h_flip, scales, max_size, scale_h_flip) of a stage, None falling back to the box's."""
    def pick(name):
      value = getattr(self, prefix + name)
      return getattr(self, name) if value is None else value
    return pick("h_flip"), pick("scales"), pick("max_size"), pick("scale_h_flip")

  def box_transforms(self, identity):
    """The box stage's transforms in Detectron's order (identity last)."""
    if not self.bbox_aug:
      return [identity]
    return _augmented(identity, *self._stage(""))[1:] + [identity]

  def mask_transforms(self, identity):
    """The mask stage's transforms in Detectron's order (identity first)."""
    return _augmented(identity, *self._stage("mask_")) if self.mask_aug else [identity]

  def keypoint_transforms(self, identity):
    """The keypoint stage's transforms in Detectron's order (identity first)."""
    return _augmented(identity, *self._stage("kps_")) if self.kps_aug else [identity]

  def all_transforms(self, identity):
    """Every distinct transform any stage uses (the inputs `build_tta_dataset` makes)."""
    every = (self.box_transforms(identity) + self.mask_transforms(identity)
             + self.keypoint_transforms(identity))
    return list(dict.fromkeys(every))


def _augmented(identity, h_flip, scales, max_size, scale_h_flip):
  """Identity, its flip if h_flip, then each scale (and its flip if scale_h_flip)."""
  out = [identity]
  if h_flip:
    out.append(dataclasses.replace(identity, flip=True))
  for scale in scales:
    out.append(Transform(float(scale), float(max_size)))
    if scale_h_flip:
      out.append(Transform(float(scale), float(max_size), flip=True))
  return out


# ------------------------------------------------------------------ inputs
def transform_inputs(example, transform, preprocessing, *, convention):
  """One decoded image (`decoder.decode`) under a transform -> a batch of one.

  The eval pipeline's steps (`pipeline.preprocess_example`) with an optional
  flip of the original image first, as Detectron flips ``im`` before
  resizing it.

  Args:
    example: dict of `decoder.decode` (IMAGE [H, W, 3] uint8 and annotations).
    transform: a `Transform`.
    preprocessing: a `Preprocessing`.
    convention: box convention (of the flipped annotations, unused here).

  Returns:
    dict with keys.IMAGES [1, Hc, Wc, 3] float32 and keys.IMAGE_INFO [1, 5].
  """
  shape = tf.shape(example[decoder.IMAGE])
  orig_h, orig_w = shape[0], shape[1]
  if transform.flip:
    example = transforms.flip_example(example, convention=convention)
  example, im_scale = transforms.resize_example(example, scale=transform.scale,
                                                max_size=transform.max_size)
  resized = tf.shape(example[decoder.IMAGE])
  image = transforms.normalize_image(example[decoder.IMAGE],
                                     channel_order=preprocessing.channel_order,
                                     pixel_means=preprocessing.pixel_means,
                                     pixel_stds=preprocessing.pixel_stds)
  landscape, portrait = transforms.canvas_shapes(
      scales=[transform.scale], max_size=transform.max_size,
      size_divisibility=preprocessing.size_divisibility,
      aspect_grouping=preprocessing.aspect_grouping)
  is_landscape = orig_w >= orig_h
  canvas_h = tf.where(is_landscape, landscape[0], portrait[0])
  canvas_w = tf.where(is_landscape, landscape[1], portrait[1])
  info = tf.stack([tf.cast(resized[0], tf.float32), tf.cast(resized[1], tf.float32), im_scale,
                   tf.cast(orig_h, tf.float32), tf.cast(orig_w, tf.float32)])
  return {keys.IMAGES: transforms.pad_image(image, canvas_h, canvas_w)[None],
          keys.IMAGE_INFO: info[None]}


def build_tta_dataset(file_pattern, *, config, preprocessing, convention="detectron",
                      num_parallel_calls=2):
  """The records of `file_pattern` in file order, each image under every transform.

  Args:
    file_pattern: glob (or globs) of TFRecord shards, as the eval pipeline's.
    config: a `TTAConfig`.
    preprocessing: a `Preprocessing` (the eval pipeline's).
    convention: box convention of the records' annotations (not used).
    num_parallel_calls: images prepared in parallel (each holds every
      transform's image).

  Returns:
    `tf.data.Dataset` of dicts: keys.IMAGE_ID [] int64 and INPUTS, a dict
    `Transform.key` -> `transform_inputs` batch of one.
  """
  wanted = config.all_transforms(preprocessing.identity)

  @tf.autograph.experimental.do_not_convert
  def prepare(serialized):
    example = decoder.decode(serialized, convention=convention,
                             max_polygon_vertices=_POLYGON_VERTICES)
    return {keys.IMAGE_ID: example[keys.IMAGE_ID],
            INPUTS: {t.key: transform_inputs(example, t, preprocessing, convention=convention)
                     for t in wanted}}

  ds = tf.data.TFRecordDataset(shard_files.list_files(file_pattern))
  ds = ds.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
  return ds.prefetch(1)


# ---------------------------------------------------------------- running
class TTADetector:
  """A detector under test-time augmentation, one image at a time.

  Each stage's graph is traced once, whatever the image size and transform
  (images are [1, None, None, 3], the flip is a tensor argument).

  What runs follows the keys of the model's own outputs on the first image
  (boxes, masks, keypoints; proposals only for an RPN), as in evaluation
  without TTA.

  Args:
    model: a built `GeneralizedRCNN` (or a model with the same inference
      methods: detect_boxes, postprocess_boxes, mask_predictions and, for
      keypoints, keypoint_heatmaps / keypoints_from_heatmaps).
    config: a `TTAConfig`.
    preprocessing: the `Preprocessing` the inputs were made with.

  Raises:
    ValueError: the model has none of those methods (RetinaNet: Detectron's
      test path for it has no test-time augmentation), or it reads
      precomputed proposals.
  """

  def __init__(self, model, config, preprocessing):
    if not callable(getattr(model, "detect_boxes", None)):
      raise ValueError(
          f"test-time augmentation needs an R-CNN's inference pieces (detect_boxes, "
          f"postprocess_boxes, ...); {type(model).__name__} has none (Detectron runs TTA for "
          f"R-CNN models only)")
    if getattr(model, "reads_precomputed_proposals", False):
      raise ValueError(
          "test-time augmentation of a model that reads precomputed proposals is not "
          "supported (each augmentation would need the proposals transformed with its image); "
          "evaluate it without --tta")
    self.model = model
    self.config = config
    self.identity = preprocessing.identity
    self.test_scale = preprocessing.scale
    self._output_shapes = None  # output key -> shape, from the first image
    convention = model.convention

    def flip_boxes(boxes, image_info, flip):
      """Boxes mirrored in the original image of `image_info` where `flip` (its own inverse)."""
      width = tf.reshape(image_info[:, 4], [-1] + [1] * (boxes.shape.rank - 2))
      return tf.where(flip, box_ops.flip_horizontal(boxes, width, convention=convention), boxes)

    def boxes_fn(inputs, flip):
      candidates = model.detect_boxes(inputs)
      return candidates._replace(
          boxes=flip_boxes(candidates.boxes, inputs[keys.IMAGE_INFO], flip))

    def masks_fn(inputs, boxes, classes, flip):
      return model.mask_predictions(inputs, flip_boxes(boxes, inputs[keys.IMAGE_INFO], flip),
                                    classes)

    def heatmaps_fn(inputs, boxes, flip):
      return model.keypoint_heatmaps(inputs, flip_boxes(boxes, inputs[keys.IMAGE_INFO], flip))

    image = {keys.IMAGES: tf.TensorSpec([1, None, None, 3], tf.float32),
             keys.IMAGE_INFO: tf.TensorSpec([1, 5], tf.float32)}
    boxes = tf.TensorSpec([1, None, 4], tf.float32)
    flip = tf.TensorSpec([], tf.bool)
    self._call = tf.function(lambda inputs: model(inputs, training=False),
                             input_signature=[image])
    self._boxes = tf.function(boxes_fn, input_signature=[image, flip])
    self._postprocess = tf.function(model.postprocess_boxes)  # one trace per transform count
    self._masks = tf.function(masks_fn, input_signature=[
        image, boxes, tf.TensorSpec([1, None], tf.int32), flip])
    self._heatmaps = tf.function(heatmaps_fn, input_signature=[image, boxes, flip])

  def detect(self, inputs):
    """Detections of one image under the configured augmentations.

    Args:
      inputs: dict `Transform.key` -> batch of one image (`build_tta_dataset`'s
        INPUTS), holding every transform of `TTAConfig.all_transforms`.

    Returns:
      dict of `outputs` keys for a batch of one, numpy arrays: PROPOSALS and
      NUM_PROPOSALS (of the identity transform, resized pixels) and, with a
      box head, DETECTION_BOXES / SCORES / CLASSES / NUM_DETECTIONS (and
      DETECTION_MASKS, DETECTION_KEYPOINTS when the model has them).
    """
    if self._output_shapes is None:  # what the model outputs without augmentation
      plain = self._call(_input(inputs, self.identity))
      self._output_shapes = {k: v.shape for k, v in plain.items()}
    if out.DETECTION_BOXES not in self._output_shapes:
      outputs = self._call(_input(inputs, self.identity))
      return {k: outputs[k].numpy() for k in (out.PROPOSALS, out.NUM_PROPOSALS)}
    result = self.boxes(inputs)
    num = int(result[out.NUM_DETECTIONS][0])
    boxes, classes = result[out.DETECTION_BOXES], result[out.DETECTION_CLASSES]
    if out.DETECTION_MASKS in self._output_shapes:
      result[out.DETECTION_MASKS] = self.masks(inputs, boxes, classes, num)
    if out.DETECTION_KEYPOINTS in self._output_shapes:
      result[out.DETECTION_KEYPOINTS] = self.keypoints(inputs, boxes, num)
    return result

  def boxes(self, inputs):
    """The box stage: every box transform's candidates, UNION, the model's post-processing.

    Returns:
      dict of numpy arrays: DETECTION_BOXES [1, D, 4] (original pixels),
      DETECTION_SCORES, DETECTION_CLASSES, NUM_DETECTIONS, and the identity
      transform's PROPOSALS [1, P, 4] (resized pixels) and NUM_PROPOSALS.
    """
    candidates, proposals = [], None
    for t in self.config.box_transforms(self.identity):
      c = self._boxes(_input(inputs, t), tf.constant(t.flip))
      candidates.append(c)
      if t == self.identity:
        proposals = c
    # UNION: every transform's (scores, boxes) rows side by side, then the model's NMS.
    dets = self._postprocess(tf.concat([c.boxes for c in candidates], axis=1),
                             tf.concat([c.scores for c in candidates], axis=1),
                             tf.concat([c.valid for c in candidates], axis=1))
    result = {k: v.numpy() for k, v in dets.items()}
    result[out.PROPOSALS] = proposals.proposals.numpy()
    result[out.NUM_PROPOSALS] = proposals.num_proposals.numpy()
    return result

  def masks(self, inputs, boxes, classes, num):
    """The mask stage: [1, D, M, M] merged mask probabilities of the detections.

    Args:
      inputs: as `detect`.
      boxes: [1, D, 4] detections in original pixels. classes: [1, D] int32.
      num: valid detections (none: zeros, as Detectron skips the stage).
    """
    if num == 0:
      size = self._output_shapes[out.DETECTION_MASKS][-1]  # M of [B, D, M, M]
      return np.zeros([1, np.shape(boxes)[1], size, size], np.float32)
    probabilities, logits = [], []
    for t in self.config.mask_transforms(self.identity):
      p, z = (x.numpy() for x in self._masks(_input(inputs, t), boxes, classes,
                                              tf.constant(t.flip)))
      probabilities.append(tta_merge.flip_masks(p) if t.flip else p)
      logits.append(tta_merge.flip_masks(z) if t.flip else z)
    return tta_merge.merge_mask_probabilities(probabilities, self.config.mask_heur, logits=logits)

  def keypoints(self, inputs, boxes, num):
    """The keypoint stage: [1, D, J, 3] keypoints from the merged heatmaps of the detections.

    Args:
      inputs: as `detect`.
      boxes: [1, D, 4] detections in original pixels.
      num: valid detections (none: zeros, as Detectron skips the stage).
    """
    if num == 0:
      return np.zeros([1, np.shape(boxes)[1], schema.NUM_KEYPOINTS, 3], np.float32)
    transforms_ = self.config.keypoint_transforms(self.identity)
    heatmaps = []
    for t in transforms_:
      h = self._heatmaps(_input(inputs, t), boxes, tf.constant(t.flip)).numpy()[0]
      heatmaps.append(tta_merge.flip_keypoint_heatmaps(h) if t.flip else h)  # [D, M, M, J]
    size_dep = {}
    if self.config.kps_scale_size_dep:
      size_dep = dict(boxes=np.asarray(boxes)[0], scales=[t.scale for t in transforms_],
                      test_scale=self.test_scale, area_threshold=self.config.kps_area_th,
                      convention=self.model.convention)
    merged = tta_merge.merge_heatmaps(heatmaps, self.config.kps_heur, **size_dep)
    return np.asarray(self.model.keypoints_from_heatmaps(merged[None], boxes))


def _input(inputs, transform):
  if transform.key not in inputs:
    raise KeyError(f"no input for transform {transform.key}; the data set was built for "
                   f"other transforms ({sorted(inputs)})")
  return inputs[transform.key]


def run_tta(model, dataset, *, class_to_category, convention, config, preprocessing,
            mask_threshold=0.5, keypoint_confidence="bbox"):
  """A `runner.evaluate` run function: the detections of `model` under test-time augmentation.

  Args:
    model: a built detector.
    dataset: `build_tta_dataset(..., config=config, preprocessing=preprocessing)`.
    class_to_category, convention, mask_threshold, keypoint_confidence: as
      `runner.run_model`.
    config: the `TTAConfig`.
    preprocessing: the `Preprocessing` of the data set.

  Returns:
    `runner.run_model`'s dict ("bbox", "segm", "proposals", "image_ids", and
    "keypoints" for keypoint models).
  """
  detector = TTADetector(model, config, preprocessing)
  results = runner.new_results()
  for element in dataset:
    outputs = detector.detect(element[INPUTS])
    runner.collect_batch(results, outputs, element[keys.IMAGE_ID].numpy()[None],
                         element[INPUTS][preprocessing.identity.key][keys.IMAGE_INFO],
                         class_to_category=class_to_category, convention=convention,
                         mask_threshold=mask_threshold, keypoint_confidence=keypoint_confidence)
  return results
