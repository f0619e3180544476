"""Keys of the batch dict that `tfdet.data.pipeline.build_dataset` yields.

Every model, target-assignment op and evaluator reads its inputs by these
constants. Shapes use:

* ``B``: images per batch (per replica);
* ``Hp, Wp``: the padded canvas. Every batch holds images of one aspect group
  only (landscape ``w >= h`` or portrait), padded to that group's static
  canvas: landscape ``[round_up(max(scales)), round_up(max_size)]``, portrait
  the transpose (``round_up`` to ``size_divisibility``); with aspect grouping
  off, a square ``[round_up(max_size)] * 2`` canvas;
* ``M``: ``max_instances``, ground truth padded (or truncated) per image;
* ``V``: ``max_polygon_vertices``, polygon vertices kept per instance;
* ``P``: ``max_proposals``, precomputed proposals per image.

All geometry is in **resized-image pixels** (original pixels times
``IMAGE_INFO[:, 2]``), horizontally flipped when the image was, and boxes
follow the box convention the pipeline was built with (`tfdet.ops.boxes`).
Padding rows are zero unless said otherwise.
"""

# [B, Hp, Wp, 3] float32. The resized image, channel order and normalization
# as configured: by default Detectron's BGR minus PIXEL_MEANS
# (102.9801, 115.9465, 122.7717), no std scaling. Pixels outside the resized
# image (bottom and right padding) are 0 after normalization, as Detectron's
# im_list_to_blob.
IMAGES = "images"

# [B, 5] float32: (resized_height, resized_width, scale, original_height,
# original_width). resized_* = round(original_* * scale) is the valid region
# of IMAGES; the first three columns are Detectron's im_info (what the
# proposal op and anchor masking take). Eval maps predictions back to the
# original image with boxes / scale.
IMAGE_INFO = "image_info"

# [B] int64: the data set's image id; -1 marks the padding images that fill
# the final partial batch in eval mode.
IMAGE_ID = "image_id"

# [B, M, 4] float32: ground-truth boxes (x1, y1, x2, y2) in the pipeline's
# convention. Detectron scales boxes by multiplying every coordinate by the
# image scale (also x2 in its inclusive convention), and so does tfdet.
GT_BOXES = "gt_boxes"

# [B, M] int32: contiguous class ids 1..num_classes; 0 = padding.
GT_CLASSES = "gt_classes"

# [B, M] bool: COCO crowd regions. They are kept (anchors / RoIs overlapping
# them are ignored during training, as in Detectron) but are never used as
# box, mask or keypoint targets.
GT_IS_CROWD = "gt_is_crowd"

# [B, M] bool: True for real ground-truth rows (crowd included), False for
# padding.
GT_VALID = "gt_valid"

# [B] int32: number of valid rows of the GT_* tensors (they come first).
NUM_GT = "num_gt"

# [B, M, V, 2] float32: (x, y) vertices of each instance's polygons,
# concatenated polygon after polygon, in resized (and flipped) pixels.
# Crowd/RLE instances have no polygons (all ids -1). An instance with more
# than V vertices in total is decimated uniformly: vertex slot j takes vertex
# floor(j * n / V) of its n vertices, so every polygon keeps roughly its share
# of vertices (a very small part of a very long instance can drop to fewer
# than 3 vertices and then rasterizes to nothing).
GT_POLYGONS = "gt_polygons"

# [B, M, V] int32: index (0, 1, ...) within its instance of the polygon each
# vertex of GT_POLYGONS belongs to; -1 for padding vertices.
GT_POLYGON_IDS = "gt_polygon_ids"

# [B, M, 17, 3] float32: COCO keypoints (x, y, visibility) in resized (and
# flipped, left/right swapped) pixels; visibility 0 = not labelled (x = y = 0),
# 1 = labelled but not visible, 2 = visible. All zeros when the records have
# no keypoints.
GT_KEYPOINTS = "gt_keypoints"

# Only when the pipeline is built with_proposals (Fast R-CNN):
# [B, P, 4] float32 precomputed proposals in resized pixels, after Detectron's
# clipping, de-duplication, small-box removal (sides must exceed 2 pixels in
# the original image) and top-P cut, in the file's order.
PROPOSALS = "proposals"
# [B, P] float32 the proposals' scores (0 for padding).
PROPOSAL_SCORES = "proposal_scores"
# [B, P] bool: True for real proposals.
PROPOSALS_VALID = "proposals_valid"

ALL_KEYS = (IMAGES, IMAGE_INFO, IMAGE_ID, GT_BOXES, GT_CLASSES, GT_IS_CROWD, GT_VALID, NUM_GT,
            GT_POLYGONS, GT_POLYGON_IDS, GT_KEYPOINTS, PROPOSALS, PROPOSAL_SCORES,
            PROPOSALS_VALID)
