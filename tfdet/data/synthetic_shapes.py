"""Shapes, people and textures of the synthetic data set (`tfdet.data.synthetic`).

Every object is a list of polygons (``[n, 2]`` float arrays of ``(x, y)``
image pixels) whose **union** is the object, as a COCO polygon
segmentation is. A ring, which has a hole, is two half-annulus polygons
(each a simple polygon: outer arc out, inner arc back), so it stays a
polygon annotation. A person is the union of limb capsules, a torso and a
head, with its 17 COCO keypoints.

Polygons are clipped to the image (Sutherland-Hodgman against the image
rectangle) and rasterized with pycocotools, the rasterizer of COCO's own
evaluation, so the painted pixels and the annotation's mask are the same.
"""

import numpy as np
from pycocotools import mask as mask_utils


def _rotate(points, angle):
  c, s = np.cos(angle), np.sin(angle)
  return points @ np.array([[c, s], [-s, c]])


def _circle(n, start=0.0, stop=2 * np.pi, endpoint=False):
  t = np.linspace(start, stop, n, endpoint=endpoint)
  return np.stack([np.cos(t), np.sin(t)], axis=1)


def polygon_area(points):
  """Shoelace area of one polygon [n, 2]."""
  x, y = points[:, 0], points[:, 1]
  return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def unit_shape(kind, rng):
  """A shape of about unit size centred at the origin, as a list of polygons."""
  if kind == "ellipse":
    r = rng.uniform(0.5, 1.0)
    return [_circle(28) * [1.0, r]]
  if kind == "rectangle":
    r = rng.uniform(0.35, 1.0)
    return [np.array([[-1, -r], [1, -r], [1, r], [-1, r]], float)]
  if kind == "triangle":
    angles = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, 3)
    return [np.stack([np.cos(angles), np.sin(angles)], axis=1)]
  if kind == "star":
    points = int(rng.integers(5, 7))
    radii = np.tile([1.0, rng.uniform(0.38, 0.5)], points)
    return [_circle(2 * points) * radii[:, None]]
  if kind == "ring":
    inner = rng.uniform(0.45, 0.65)
    halves = []
    for start in (0.0, np.pi):
      outer_arc = _circle(15, start, start + np.pi, endpoint=True)
      halves.append(np.concatenate([outer_arc, inner * outer_arc[::-1]]))
    return halves
  if kind == "cross":
    w = rng.uniform(0.25, 0.4)
    return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                      [-w, w], [-1, w], [-1, -w], [-w, -w]], float)]
  raise ValueError(f"unknown shape {kind!r}")


def place(polygons, centre, scale, angle):
  """Rotates, scales and moves unit polygons."""
  return [_rotate(p, angle) * scale + centre for p in polygons]


def capsule(a, b, radius, n=8):
  """The polygon of a stadium (segment a-b thickened by radius): [2n, 2]."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  d = b - a
  angle = np.arctan2(d[1], d[0]) if np.hypot(*d) > 1e-6 else 0.0
  cap_b = _circle(n, angle - np.pi / 2, angle + np.pi / 2, endpoint=True) * radius + b
  cap_a = _circle(n, angle + np.pi / 2, angle + 3 * np.pi / 2, endpoint=True) * radius + a
  return np.concatenate([cap_b, cap_a])


def _limb(rng, base, length1, length2, angle, bend):
  mid = base + length1 * np.array([np.cos(angle), np.sin(angle)])
  end = mid + length2 * np.array([np.cos(angle + bend), np.sin(angle + bend)])
  return mid, end


def person(rng, centre, height):
  """A person figure facing the camera, in a random plausible pose.

  Args:
    rng: numpy Generator.
    centre: (x, y) of the hips' midpoint.
    height: standing height in pixels.

  Returns:
    (polygons, keypoints [17, 2] in COCO order). The person's left is the
    image's right (facing the camera).
  """
  h = float(height)
  c = np.asarray(centre, float)
  tilt = rng.uniform(-0.25, 0.25)
  up = np.array([np.sin(tilt), -np.cos(tilt)])
  right = np.array([-up[1], up[0]])  # image right, the person's left
  neck = c + 0.30 * h * up
  head = neck + 0.11 * h * up
  shoulder_l, shoulder_r = neck + 0.11 * h * right, neck - 0.11 * h * right
  hip_l, hip_r = c + 0.07 * h * right, c - 0.07 * h * right
  down = np.arctan2(-up[1], -up[0])
  kp = np.zeros((17, 2))
  kp[0] = head + 0.02 * h * up * rng.uniform(-1, 1)
  kp[1], kp[2] = head + 0.03 * h * right + 0.02 * h * up, head - 0.03 * h * right + 0.02 * h * up
  kp[3], kp[4] = head + 0.055 * h * right, head - 0.055 * h * right
  kp[5], kp[6] = shoulder_l, shoulder_r
  for side, (shoulder, sign) in enumerate(((shoulder_l, 1), (shoulder_r, -1))):
    angle = down - sign * rng.uniform(0.1, 2.4)  # arm raised outwards by up to ~140 degrees
    elbow, wrist = _limb(rng, shoulder, 0.16 * h, 0.14 * h, angle, -sign * rng.uniform(0, 1.4))
    kp[7 + side], kp[9 + side] = elbow, wrist
  kp[11], kp[12] = hip_l, hip_r
  for side, (hip, sign) in enumerate(((hip_l, 1), (hip_r, -1))):
    angle = down - sign * rng.uniform(-0.1, 0.5)
    knee, ankle = _limb(rng, hip, 0.24 * h, 0.23 * h, angle, sign * rng.uniform(0, 0.6))
    kp[13 + side], kp[15 + side] = knee, ankle
  limb_r = 0.035 * h
  polygons = [capsule(kp[a], kp[b], limb_r) for a, b in
              ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))]
  polygons.append(np.array([shoulder_l + 0.02 * h * right, shoulder_r - 0.02 * h * right,
                            hip_r - 0.02 * h * right, hip_l + 0.02 * h * right]))
  polygons.append(capsule(neck, neck + 0.04 * h * up, 0.03 * h, n=6))
  polygons.append(_circle(16) * [0.075 * h, 0.09 * h] + head)
  return polygons, kp


def clip_polygon(points, width, height):
  """Sutherland-Hodgman clip of one polygon [n, 2] to [0, W] x [0, H]; may return < 3 points."""
  out = np.asarray(points, float)
  for axis, bound, keep_below in ((0, 0.0, False), (0, float(width), True),
                                  (1, 0.0, False), (1, float(height), True)):
    if len(out) == 0:
      break
    inside = out[:, axis] <= bound if keep_below else out[:, axis] >= bound
    result = []
    for i in range(len(out)):
      p, q = out[i - 1], out[i]
      p_in, q_in = inside[i - 1], inside[i]
      if p_in != q_in:
        t = (bound - p[axis]) / (q[axis] - p[axis])
        result.append(p + t * (q - p))
      if q_in:
        result.append(q)
    out = np.array(result).reshape(-1, 2)
  return out


def clip_polygons(polygons, width, height):
  """Clips every polygon to the image, rounds to 0.01 px, drops those left with < 3 points."""
  out = []
  for p in polygons:
    c = np.round(clip_polygon(p, width, height), 2)
    if len(c) >= 3 and polygon_area(c) > 0:
      out.append(c)
  return out


def rasterize(polygons, width, height):
  """The union of polygons as a bool [H, W] mask, rasterized as COCO does."""
  if not polygons:
    return np.zeros((height, width), bool)
  rles = mask_utils.frPyObjects([p.reshape(-1).tolist() for p in polygons], height, width)
  return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def background(rng, height, width, plain=False):
  """A textured background [H, W, 3] float in [0, 255]: gradient, blotches, stripes, noise.

  ``plain``: the gradient and a little noise only.
  """
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi)
  t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(height, width)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
  c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
  img = c0 + (c1 - c0) * t[..., None]
  if plain:
    return img + rng.normal(0, 3, img.shape)
  # Low-frequency blotches: a coarse random grid, bilinearly upsampled.
  gh, gw = int(rng.integers(3, 8)), int(rng.integers(3, 8))
  grid = rng.normal(0, 25, (gh, gw, 3))
  gy = np.linspace(0, gh - 1, height)
  gx = np.linspace(0, gw - 1, width)
  y0, x0 = np.floor(gy).astype(int), np.floor(gx).astype(int)
  y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
  fy, fx = (gy - y0)[:, None, None], (gx - x0)[None, :, None]
  img += ((grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx) * (1 - fy)
          + (grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx) * fy)
  if rng.uniform() < 0.4:
    img += texture(rng, yy, xx, "stripes", amplitude=rng.uniform(10, 30))[..., None]
  img += rng.normal(0, 6, img.shape)
  return img


def texture(rng, yy, xx, kind, amplitude):
  """A scalar pattern over pixel grids yy, xx: "stripes", "checks" or "noise"."""
  if kind == "stripes":
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
    return amplitude * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
  if kind == "checks":
    period = rng.uniform(4, 10)
    return amplitude * (((xx // period) + (yy // period)) % 2 * 2 - 1)
  return rng.normal(0, amplitude, xx.shape)


def paint(img, mask, rng, colour=None, flat=False):
  """Fills ``mask`` of ``img`` in place with a random colour and texture (``flat``: none)."""
  ys, xs = np.nonzero(mask)
  if len(ys) == 0:
    return
  colour = rng.uniform(0, 255, 3) if colour is None else np.asarray(colour, float)
  kind = "flat" if flat else rng.choice(["flat", "stripes", "checks", "noise"])
  yy, xx = ys.astype(np.float32), xs.astype(np.float32)
  pattern = 0.0 if kind == "flat" else texture(rng, yy, xx, kind, rng.uniform(10, 35))
  img[ys, xs] = colour + np.asarray(pattern)[..., None] + rng.normal(0, 4, (len(ys), 3))
