"""Drawing detections on images with numpy (no PIL or OpenCV).

Boxes are 2-pixel rectangles, masks are blended at 40% in the class colour,
and each box gets a label "name score" in a built-in 3x5 pixel font (digits,
upper-case letters, '.', '-', ' '; other characters draw as blanks), scaled
x2 on a filled background at the box's top-left corner. Keypoints whose
score passes a threshold (2 on the heatmap logit, as Detectron's
visualization) are dots joined by COCO's skeleton lines, a line only where
both its ends pass; keypoint ``j`` and limb ``l`` take fixed colours of a hue
ramp. Images are encoded with tf.io.encode_png / encode_jpeg.
"""

import numpy as np
import tensorflow as tf

# 3x5 glyphs, rows top to bottom, 3 bits each (MSB = left column).
_FONT = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0),
    " ": (0, 0, 0, 0, 0), "A": (2, 5, 7, 5, 5), "B": (6, 5, 6, 5, 6), "C": (7, 4, 4, 4, 7),
    "D": (6, 5, 5, 5, 6), "E": (7, 4, 6, 4, 7), "F": (7, 4, 6, 4, 4), "G": (7, 4, 5, 5, 7),
    "H": (5, 5, 7, 5, 5), "I": (7, 2, 2, 2, 7), "J": (1, 1, 1, 5, 7), "K": (5, 5, 6, 5, 5),
    "L": (4, 4, 4, 4, 7), "M": (5, 7, 7, 5, 5), "N": (6, 5, 5, 5, 5), "O": (7, 5, 5, 5, 7),
    "P": (7, 5, 7, 4, 4), "Q": (7, 5, 5, 7, 1), "R": (6, 5, 6, 5, 5), "S": (7, 4, 7, 1, 7),
    "T": (7, 2, 2, 2, 2), "U": (5, 5, 5, 5, 7), "V": (5, 5, 5, 5, 2), "W": (5, 5, 7, 7, 5),
    "X": (5, 5, 2, 5, 5), "Y": (5, 5, 2, 2, 2), "Z": (7, 1, 2, 4, 7),
}
_GLYPH_SCALE = 2

# COCO's person skeleton (the "skeleton" of person_keypoints_*.json, which
# numbers keypoints from 1) with 0-based indices into COCO's 17 keypoints.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5),
                 (4, 6))
# Detectron's visualization draws keypoints whose logit exceeds 2.
KEYPOINT_THRESHOLD = 2.0


def class_color(class_id):
  """A stable, saturated RGB colour [3] uint8 for a class id."""
  rng = np.random.default_rng(int(class_id) * 7919 + 17)
  color = rng.integers(64, 256, size=3)
  color[int(class_id) % 3] = 255
  return color.astype(np.uint8)


def hue_color(index, count):
  """RGB [3] uint8 of hue index / count at full saturation and value (a rainbow ramp)."""
  h = 6.0 * (index % max(count, 1)) / max(count, 1)
  x = 1.0 - abs(h % 2.0 - 1.0)
  rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h) % 6]
  return np.round(255 * np.array(rgb)).astype(np.uint8)


def _paint_discs(canvas, xs, ys, radius, color):
  """Paints discs of `radius` pixels around the pixels holding points (xs, ys) (in place)."""
  r = int(np.ceil(radius))
  dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
  inside = dx ** 2 + dy ** 2 <= radius ** 2 + 1e-6
  px = np.floor(np.asarray(xs, float)).astype(np.int64)[:, None] + dx[inside][None]
  py = np.floor(np.asarray(ys, float)).astype(np.int64)[:, None] + dy[inside][None]
  ok = (px >= 0) & (px < canvas.shape[1]) & (py >= 0) & (py < canvas.shape[0])
  canvas[py[ok], px[ok]] = color


def draw_keypoints(canvas, keypoints, *, threshold=KEYPOINT_THRESHOLD, skeleton=COCO_SKELETON,
                   radius=2.0, line_width=1.0):
  """Draws one instance's keypoints and skeleton on `canvas` (in place).

  Args:
    canvas: [H, W, 3] uint8.
    keypoints: [J, 3] (x, y, score), x and y in the canvas' continuous pixel
      coordinates (pixel (i, j) covers [i, i + 1) x [j, j + 1)).
    threshold: keypoints with score <= threshold are not drawn, nor the
      lines that touch them.
    skeleton: pairs (a, b) of 0-based keypoint indices to join (pairs past
      J are skipped); () draws the dots only.
    radius: dot radius in pixels.
    line_width: line width in pixels.
  """
  kps = np.asarray(keypoints, float)
  shown = kps[:, 2] > threshold
  for limb, (a, b) in enumerate(skeleton):
    if a >= len(kps) or b >= len(kps) or not (shown[a] and shown[b]):
      continue
    length = float(np.hypot(*(kps[b, :2] - kps[a, :2])))
    t = np.linspace(0.0, 1.0, int(np.ceil(2 * length)) + 2)[:, None]
    points = (1 - t) * kps[a, :2] + t * kps[b, :2]  # [S, 2], two samples per pixel
    color = hue_color(limb, len(skeleton))
    _paint_discs(canvas, points[:, 0], points[:, 1], line_width / 2, color)
  for j in np.flatnonzero(shown):
    _paint_discs(canvas, kps[j:j + 1, 0], kps[j:j + 1, 1], radius, hue_color(j, len(kps)))


def text_bitmap(text):
  """[5 * s, 4 * len(text) * s] bool bitmap of `text` in the built-in font (s = 2)."""
  cols = []
  for ch in text.upper():
    rows = _FONT.get(ch, _FONT[" "])
    glyph = np.array([[(r >> (2 - c)) & 1 for c in range(3)] + [0] for r in rows], bool)
    cols.append(glyph)
  bitmap = np.concatenate(cols, axis=1) if cols else np.zeros((5, 0), bool)
  return np.kron(bitmap, np.ones((_GLYPH_SCALE, _GLYPH_SCALE), bool)).astype(bool)


def _draw_text(image, text, x, y, color):
  bitmap = text_bitmap(text)
  h, w = bitmap.shape
  pad = 1
  y0 = int(np.clip(y - h - 2 * pad, 0, max(image.shape[0] - h - 2 * pad, 0)))
  x0 = int(np.clip(x, 0, max(image.shape[1] - 1, 0)))
  region = image[y0:y0 + h + 2 * pad, x0:x0 + w + 2 * pad]
  region[...] = color
  sub = bitmap[:region.shape[0] - pad, :region.shape[1] - pad]
  inner = region[pad:pad + sub.shape[0], pad:pad + sub.shape[1]]
  inner[sub[:inner.shape[0], :inner.shape[1]]] = 0


def draw_detections(image, boxes, classes, scores, *, masks=None, keypoints=None,
                    class_names=None, score_threshold=0.5, thickness=2, mask_alpha=0.4,
                    keypoint_threshold=KEYPOINT_THRESHOLD, skeleton=COCO_SKELETON):
  """Draws detections above a score threshold on a copy of the image.

  Args:
    image: [H, W, 3] uint8 RGB.
    boxes: [D, 4] (x1, y1, x2, y2) image pixels. classes: [D] int. scores: [D].
    masks: None or [D, H, W] binary masks pasted into the image.
    keypoints: None or [D, J, 3] (x, y, score) in image pixels
      (`outputs.DETECTION_KEYPOINTS`).
    class_names: {class id: name}; None shows the id.
    score_threshold: detections below it are not drawn.
    thickness: box line width in pixels.
    mask_alpha: mask blending weight.
    keypoint_threshold: keypoints with a score at or below it are not drawn.
    skeleton: keypoint pairs joined by lines (`draw_keypoints`).

  Returns:
    [H, W, 3] uint8.
  """
  canvas = np.array(image, np.uint8, copy=True)
  height, width = canvas.shape[:2]
  for i in np.argsort(-np.asarray(scores)):
    if scores[i] < score_threshold:
      continue
    color = class_color(classes[i])
    if masks is not None:
      m = np.asarray(masks[i], bool)
      canvas[m] = ((1 - mask_alpha) * canvas[m] + mask_alpha * color).astype(np.uint8)
    x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
    x1, x2 = np.clip([x1, x2], 0, width - 1)
    y1, y2 = np.clip([y1, y2], 0, height - 1)
    t = thickness
    canvas[y1:y1 + t, x1:x2 + 1] = color
    canvas[max(y2 - t + 1, 0):y2 + 1, x1:x2 + 1] = color
    canvas[y1:y2 + 1, x1:x1 + t] = color
    canvas[y1:y2 + 1, max(x2 - t + 1, 0):x2 + 1] = color
    if keypoints is not None:
      draw_keypoints(canvas, keypoints[i], threshold=keypoint_threshold, skeleton=skeleton)
    name = (class_names or {}).get(int(classes[i]), str(int(classes[i])))
    _draw_text(canvas, f"{name} {float(scores[i]):.2f}", x1, y1, color)
  return canvas


def encode_image(image, path):
  """Writes [H, W, 3] uint8 as PNG (.png) or JPEG (other suffixes) with tf.io."""
  if str(path).lower().endswith(".png"):
    data = tf.io.encode_png(image)
  else:
    data = tf.io.encode_jpeg(image, quality=95)
  tf.io.write_file(str(path), data)
