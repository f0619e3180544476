"""Binary mask -> polygons along pixel edges (pure numpy), for RLE instances.

tfdet builds Mask R-CNN targets by rasterizing an instance's *polygons*
(`tfdet.ops.mask_targets`: a pixel is inside when its centre
``(j + 0.5, i + 0.5)`` is inside any polygon, even-odd per polygon), so an
instance annotated only by an RLE mask would have no mask target.
`mask_to_polygons` turns such a mask into polygons:

1. **Connected components, 4-connectivity.** Pixels are connected through
   their sides only; two pixels touching at a corner only are separate
   components (the background is then 8-connected, the usual dual pair, so
   every component has exactly one outer boundary and a diagonal chain of
   pixels does not enclose anything). This choice keeps each polygon simple:
   with 8-connectivity a polygon would pinch to a single point at such
   corners.
2. **Outer boundary along pixel edges.** Each component's outer boundary is
   traced along pixel sides, vertices at integer pixel corners ``(x, y)``
   (pixel ``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``), clockwise on the
   screen (y down), starting at its top-left corner. A pixel centre is
   inside the traced polygon exactly when the pixel belongs to the component
   or to one of its holes, so with ``tolerance=0`` the pixel-centre rule
   reproduces the mask with its holes filled, pixel for pixel.
3. **Holes are filled**: only outer boundaries are kept, as COCO polygon
   annotations cannot express holes either (their parts are unioned). A
   component lying inside another's hole is then covered by that
   component's polygon and is dropped as redundant.
4. **Collinear vertices are removed** (only corners of the staircase stay),
   then the polygon is **simplified with Douglas-Peucker** at ``tolerance``
   pixels (0 keeps the exact staircase): every vertex dropped lies within
   ``tolerance`` of the simplified polygon's edge replacing it, so a
   pixel-centre decision can change only for centres within ``tolerance``
   of the true boundary. A simplified polygon may self-intersect in rare
   thin places; the even-odd rule then decides there.
5. **Small components are kept.** An exact outline always has >= 4
   vertices; when simplification would leave fewer than 3 (a component
   thinner than about twice the tolerance, e.g. a single pixel), the
   tolerance is halved until it does not (at worst the exact outline), so a
   component is never dropped for being degenerate.

Polygons are returned largest (enclosed area) first, as flat
``[x0, y0, x1, y1, ...]`` float lists in the mask's pixel frame.

Note: the exactness is with respect to tfdet's pixel-centre rule; the
pycocotools rasterizer (``frPyObjects``) samples differently and does not
reproduce the mask pixel for pixel from these polygons.
"""

import numpy as np

# Directions of boundary edges in (dx, dy), y down; index + 1 mod 4 is the
# clockwise (on the screen) turn: +x, +y, -x, -y.
_DIRS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.int64)


def _boundary_edges(mask):
  """Directed unit boundary edges of a boolean mask (padded by one pixel of background).

  Each foreground pixel side facing background gives one edge, oriented so
  that foreground is on the walker's right on the screen (clockwise outer
  boundaries, counter-clockwise holes).

  Returns:
    (x0 [E], y0 [E], direction [E]) int64 arrays, in the padded frame.
  """
  m = np.pad(mask, 1)
  inner = m[1:-1, 1:-1]
  i, j = np.nonzero(inner)
  i, j = i + 1, j + 1  # padded pixel coordinates
  xs, ys, ds = [], [], []
  # (neighbour offset, start corner offset (dx, dy), direction)
  for (di, dj), (sx, sy), d in (((-1, 0), (0, 0), 0), ((0, 1), (1, 0), 1),
                                ((1, 0), (1, 1), 2), ((0, -1), (0, 1), 3)):
    open_side = ~m[i + di, j + dj]
    xs.append(j[open_side] + sx)
    ys.append(i[open_side] + sy)
    ds.append(np.full(int(open_side.sum()), d, np.int64))
  return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)


def _trace_loops(x0, y0, d, shape):
  """Chains boundary edges into closed loops of corner vertices.

  At a corner where two diagonal pixels meet (two edges in, two out) the
  walk turns clockwise, which keeps the two pixels in separate loops
  (4-connectivity). Elsewhere a corner has one edge out.

  Returns:
    list of [n, 2] int64 vertex arrays (collinear vertices removed), each
    starting at its top-left corner.
  """
  if not len(d):
    return []
  h1, w1 = shape[0] + 1, shape[1] + 1
  table = np.full((h1 * w1 * 4,), -1, np.int64)  # (corner, direction) -> edge
  table[(y0 * w1 + x0) * 4 + d] = np.arange(len(d))
  x1 = x0 + _DIRS[d, 0]
  y1 = y0 + _DIRS[d, 1]
  end = (y1 * w1 + x1) * 4
  nxt = np.full(len(d), -1, np.int64)
  for turn in (3, 0, 1):  # counter-clockwise, straight, clockwise: the last found wins
    cand = table[end + (d + turn) % 4]
    nxt = np.where(cand >= 0, cand, nxt)
  # Corner vertices: the edges whose direction differs from their predecessor's.
  prev = np.empty_like(nxt)
  prev[nxt] = np.arange(len(nxt))
  is_corner = d != d[prev]
  order = np.lexsort((x0, y0))  # loops start at their top-left corner
  seen = np.zeros(len(d), bool)
  loops = []
  for start in order:
    if seen[start]:
      continue
    chain = []
    e = start
    while not seen[e]:
      seen[e] = True
      chain.append(e)
      e = nxt[e]
    chain = np.asarray(chain)
    chain = chain[is_corner[chain]]
    loops.append(np.stack([x0[chain], y0[chain]], axis=1))
  return loops


def _signed_area(v):
  """Shoelace area, positive for clockwise-on-screen (y down) loops."""
  x, y = v[:, 0].astype(np.float64), v[:, 1].astype(np.float64)
  return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _point_in_polygon(px, py, v):
  """Even-odd test of one point against a closed polygon [n, 2]."""
  xa, ya = v[:, 0].astype(np.float64), v[:, 1].astype(np.float64)
  xb, yb = np.roll(xa, -1), np.roll(ya, -1)
  straddles = (ya > py) != (yb > py)
  dy = np.where(straddles, yb - ya, 1.0)
  x_cross = xa + (py - ya) * (xb - xa) / dy
  return bool(np.count_nonzero(straddles & (px < x_cross)) % 2)


def _segment_distances(points, a, b):
  """Distances of points [n, 2] to the segment a-b."""
  ab = b - a
  denom = float(ab @ ab)
  if denom == 0.0:
    return np.hypot(*(points - a).T)
  t = np.clip((points - a) @ ab / denom, 0.0, 1.0)
  return np.hypot(*(points - (a + t[:, None] * ab)).T)


def _douglas_peucker_open(points, tolerance):
  """Douglas-Peucker keep-flags of an open chain (both ends kept), iterative."""
  keep = np.zeros(len(points), bool)
  keep[0] = keep[-1] = True
  stack = [(0, len(points) - 1)]
  while stack:
    lo, hi = stack.pop()
    if hi - lo < 2:
      continue
    dist = _segment_distances(points[lo + 1:hi], points[lo], points[hi])
    k = int(np.argmax(dist))
    if dist[k] > tolerance:
      mid = lo + 1 + k
      keep[mid] = True
      stack.append((lo, mid))
      stack.append((mid, hi))
  return keep


def simplify_closed(vertices, tolerance):
  """Douglas-Peucker on a closed polygon [n, 2], keeping >= 3 vertices.

  The loop is split at vertex 0 and the vertex farthest from it, and each
  half simplified as an open chain. If fewer than 3 vertices would remain,
  the tolerance is halved until 3 remain (at worst nothing is removed).

  Returns:
    [m, 2] float64 vertices, a subsequence of ``vertices`` starting at vertex 0.
  """
  v = np.asarray(vertices, np.float64)
  if tolerance <= 0 or len(v) <= 3:
    return v
  far = int(np.argmax(np.hypot(*(v - v[0]).T)))
  closed = np.concatenate([v, v[:1]])
  while True:
    keep = np.zeros(len(v), bool)
    keep[:far + 1] |= _douglas_peucker_open(closed[:far + 1], tolerance)
    tail = _douglas_peucker_open(closed[far:], tolerance)
    keep[far:] |= tail[:-1]
    if keep.sum() >= 3:
      return v[keep]
    tolerance /= 2.0
    if tolerance < 1e-6:
      return v


def mask_to_polygons(mask, tolerance=1.0):
  """Outer boundaries of a mask's 4-connected components as polygons.

  Args:
    mask: [H, W] array, nonzero = foreground.
    tolerance: Douglas-Peucker tolerance in pixels; 0 keeps the exact
      staircase outline (collinear vertices removed).

  Returns:
    list of flat ``[x0, y0, x1, y1, ...]`` float lists (>= 3 vertices each),
    largest enclosed area first; [] for an empty mask. With ``tolerance=0``
    the pixel-centre rule of `tfdet.ops.mask_targets` on their union gives
    back the mask with its holes filled, exactly.
  """
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0, got {tolerance}")
  mask = np.asarray(mask) != 0
  if mask.ndim != 2:
    raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
  rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
  if not len(rows):
    return []
  top, left = int(rows[0]), int(cols[0])
  crop = mask[top:rows[-1] + 1, left:cols[-1] + 1]
  x0, y0, d = _boundary_edges(crop)
  loops = _trace_loops(x0, y0, d, (crop.shape[0] + 2, crop.shape[1] + 2))
  outer = [(a, v) for v in loops if (a := _signed_area(v)) > 0]
  outer.sort(key=lambda t: -t[0])  # stable: ties keep top-left-first order
  kept = []
  for _, v in outer:
    # The pixel below-right of the top-left corner belongs to the component;
    # inside a larger outline means inside its hole: covered already.
    cx, cy = v[0, 0] + 0.5, v[0, 1] + 0.5
    if any(_point_in_polygon(cx, cy, k) for k in kept):
      continue
    kept.append(v)
  offset = np.array([left - 1, top - 1], np.float64)  # undo crop and padding
  return [(simplify_closed(v, tolerance) + offset).reshape(-1).tolist() for v in kept]


# Below 0.5 pixel no pixel-centre decision can change (every centre is at
# least 0.5 from the staircase outline), so this tolerance is lossless.
LOSSLESS_TOLERANCE = 0.49
ADAPTIVE_TOLERANCES = (LOSSLESS_TOLERANCE, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def mask_to_polygons_within(mask, max_vertices):
  """Polygons of a mask, as exact as a vertex budget allows.

  Tries the tolerances of ADAPTIVE_TOLERANCES in order (the first is
  lossless) and returns the first result whose polygons total at most
  `max_vertices` vertices, or the coarsest one.

  Returns:
    (polygons as in `mask_to_polygons`, the tolerance used).
  """
  polygons = []
  for tolerance in ADAPTIVE_TOLERANCES:
    polygons = mask_to_polygons(mask, tolerance)
    if sum(len(p) // 2 for p in polygons) <= max_vertices:
      break
  return polygons, tolerance
