"""Keys of the dict a detector returns (`GeneralizedRCNN.call`, `RetinaNet.call`), and of
its heads' outputs (per feature map or per RoI, before the detector flattens them).

What a detector computes is told by which keys its output holds: entry
points and evaluation look at the keys, never at the model's parts.

Shapes: B images, N anchors over all RPN (or RetinaNet) levels, P proposals per image, R
sampled RoIs per image, F = round(fg_fraction * R) foreground slots, D
detections per image, M the mask resolution, C mask channels (K + 1, or 1
class-agnostic), J keypoints per instance (17 for COCO).

Keypoints (DETECTION_KEYPOINTS, keypoint models only): ``(x, y)`` are in
original-image pixels, in the frame of the ground-truth keypoints (COCO's
keypoint numbers as the annotations give them; `keys.GT_KEYPOINTS` divided
by the image scale). Detectron's test-time `heatmaps_to_keypoints` produces
them as continuous coordinates -- cell ``d`` of the heatmap resized to the
box (``ceil(width)`` cells) maps to ``x1 + (d + 0.5) * width / ceil(width)``
(`tfdet.ops.keypoint_heatmaps`) -- and its COCO evaluator
writes them unchanged, as `tfdet.evaluation.coco.keypoints_to_coco` does.
(detectron2 reads COCO keypoints as pixel indices instead, adding 0.5 when
loading and subtracting it when writing results; tfdet's pipeline adds
nothing, so nothing is subtracted.) The third value is the keypoint's score:
the heatmap logit at the chosen location (Detectron's ``logit`` row), which
Detectron's visualization thresholds at 2 and which its
``KRCNN.KEYPOINT_CONFIDENCE: logit`` averages into an instance score. Rows
past NUM_DETECTIONS are padding.
"""

from tfdet.data import keys

# R-CNN: always.
RPN_LOGITS = "rpn_logits"  # [B, N] float32 objectness logits
RPN_DELTAS = "rpn_deltas"  # [B, N, 4] float32
ANCHORS = "anchors"  # [N, 4] float32, the anchors of RPN_LOGITS' (RETINANET_LOGITS') order
# The batch's precomputed proposals (`keys.PROPOSALS`) are in the same frame.
PROPOSALS = keys.PROPOSALS  # [B, P, 4] float32, resized-image pixels
PROPOSAL_SCORES = keys.PROPOSAL_SCORES  # [B, P] float32 objectness probabilities
NUM_PROPOSALS = "num_proposals"  # [B] int32

# RetinaNet: always (K foreground classes, no background logit).
RETINANET_LOGITS = "retinanet_logits"  # [B, N, K] float32 sigmoid class logits
RETINANET_DELTAS = "retinanet_deltas"  # [B, N, 4] float32 class-agnostic box deltas

# Training (models with a box head).
SAMPLED_ROIS = "sampled_rois"  # [B, R, 4] float32
ROI_LABELS = "roi_labels"  # [B, R] int32, 0 = background
ROI_BOX_TARGETS = "roi_box_targets"  # [B, R, 4] float32
ROI_VALID = "roi_valid"  # [B, R] bool
CLASS_LOGITS = "class_logits"  # [B, R, K+1] float32
BOX_DELTAS = "box_deltas"  # [B, R, 4 (K+1)] float32
MASK_LOGITS = "mask_logits"  # [B, F, M, M, C] float32 (mask models)
MASK_TARGETS = "mask_targets"  # [B, F, M, M] float32
MASK_LABELS = "mask_labels"  # [B, F] int32
MASK_FG = "mask_fg"  # [B, F] bool
# Keypoint models: Rk keypoint RoIs per image, S = heatmap size (56), J keypoints.
KEYPOINT_LOGITS = "keypoint_logits"  # [B, Rk, S, S, J] float32 heatmap logits
KEYPOINT_TARGETS = "keypoint_targets"  # [B, Rk, J] int32 flat heatmap index
KEYPOINT_WEIGHTS = "keypoint_weights"  # [B, Rk, J] float32, 1 for a visible keypoint in the RoI

# Inference (models with a box head, RetinaNet). Boxes in original-image pixels.
DETECTION_BOXES = "detection_boxes"  # [B, D, 4] float32
DETECTION_SCORES = "detection_scores"  # [B, D] float32
DETECTION_CLASSES = "detection_classes"  # [B, D] int32, 1..K
NUM_DETECTIONS = "num_detections"  # [B] int32
DETECTION_MASKS = "detection_masks"  # [B, D, M, M] float32 probabilities (mask models)
DETECTION_KEYPOINTS = "detection_keypoints"  # [B, D, J, 3] float32 (x, y, score) (keypoint models)
