"""Keys of the dict a detector returns (`GeneralizedRCNN.call`).

Shapes: B images, N anchors over all RPN levels, P proposals per image, R
sampled RoIs per image, F = round(fg_fraction * R) foreground slots, D
detections per image, M the mask resolution, C mask channels (K + 1, or 1
class-agnostic).
"""

# Always.
RPN_LOGITS = "rpn_logits"  # [B, N] float32 objectness logits
RPN_DELTAS = "rpn_deltas"  # [B, N, 4] float32
ANCHORS = "anchors"  # [N, 4] float32, the anchors of RPN_LOGITS' order
PROPOSALS = "proposals"  # [B, P, 4] float32, resized-image pixels
PROPOSAL_SCORES = "proposal_scores"  # [B, P] float32 objectness probabilities
NUM_PROPOSALS = "num_proposals"  # [B] int32

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

# Inference (models with a box head). Boxes in original-image pixels.
DETECTION_BOXES = "detection_boxes"  # [B, D, 4] float32
DETECTION_SCORES = "detection_scores"  # [B, D] float32
DETECTION_CLASSES = "detection_classes"  # [B, D] int32, 1..K
NUM_DETECTIONS = "num_detections"  # [B] int32
DETECTION_MASKS = "detection_masks"  # [B, D, M, M] float32 probabilities (mask models)
