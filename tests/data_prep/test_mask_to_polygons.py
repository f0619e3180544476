"""Mask -> polygons: exact pixel-edge tracing, holes filled, simplification bound, converter."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from data_prep import coco_to_tfrecord as c2t
from data_prep import mask_to_polygons as m2p
from tests.data_prep.conftest import read_records, save_json, tiny_coco
from tfdet.data import schema
from tfdet.ops import mask_targets


def _blobs(rng, height, width, fill=0.45, smooth=3):
  """Random blobs: box-blurred noise thresholded (several components, some holes)."""
  x = rng.uniform(size=(height, width))
  for _ in range(2):
    p = np.pad(x, smooth, mode="wrap")
    c = np.cumsum(np.cumsum(np.pad(p, ((1, 0), (1, 0))), 0), 1)
    k = 2 * smooth + 1
    x = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k])[:height, :width] / k ** 2
  return x > np.quantile(x, 1 - fill)


def _rasterize(polygons, height, width):
  """Pixel-centre rule of tfdet.ops.mask_targets in numpy: even-odd per polygon, union."""
  py, px = np.mgrid[:height, :width] + 0.5
  out = np.zeros((height, width), bool)
  for flat in polygons:
    v = np.reshape(flat, (-1, 2))
    xa, ya = v[:, 0], v[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    inside = np.zeros((height, width), bool)
    for k in range(len(v)):
      if ya[k] == yb[k]:
        continue
      straddles = (ya[k] > py) != (yb[k] > py)
      x_cross = xa[k] + (py - ya[k]) * (xb[k] - xa[k]) / (yb[k] - ya[k])
      inside ^= straddles & (px < x_cross)
    out |= inside
  return out


def _fill_holes(mask):
  """Background not 8-connected to the border becomes foreground (the 4/8 dual of tracing)."""
  m = np.pad(mask, 1)
  outside = np.zeros_like(m)
  outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
  while True:
    p = np.pad(outside, 1)
    grown = np.zeros_like(outside)
    for di in (-1, 0, 1):
      for dj in (-1, 0, 1):
        grown |= p[1 + di:p.shape[0] - 1 + di, 1 + dj:p.shape[1] - 1 + dj]
    grown &= ~m
    if (grown == outside).all():
      return ~outside[1:-1, 1:-1]
    outside = grown


def _boundary_distance(polygons, height, width):
  """Distance of every pixel centre to the polygons' edges."""
  py, px = np.mgrid[:height, :width] + 0.5
  best = np.full((height, width), np.inf)
  for flat in polygons:
    v = np.reshape(flat, (-1, 2))
    for a, b in zip(v, np.roll(v, -1, axis=0), strict=True):
      ab = b - a
      t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / (ab @ ab), 0, 1)
      best = np.minimum(best, np.hypot(px - a[0] - t * ab[0], py - a[1] - t * ab[1]))
  return best


def _num_vertices(polygons):
  return sum(len(p) // 2 for p in polygons)


def test_exact_tracing_of_random_blobs():
  rng = np.random.default_rng(0)
  for trial in range(12):
    h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
    mask = _blobs(rng, h, w, fill=rng.uniform(0.2, 0.6), smooth=int(rng.integers(1, 4)))
    polygons = m2p.mask_to_polygons(mask, tolerance=0)
    filled = _fill_holes(mask)
    np.testing.assert_array_equal(_rasterize(polygons, h, w), filled, err_msg=str(trial))
    areas = [abs(m2p._signed_area(np.reshape(p, (-1, 2)))) for p in polygons]
    assert areas == sorted(areas, reverse=True)
    for p in polygons:  # integer corners, no collinear vertices, axis-parallel edges
      v = np.reshape(p, (-1, 2))
      assert len(v) >= 4 and (v == np.round(v)).all()
      e = np.roll(v, -1, axis=0) - v
      assert ((e[:, 0] == 0) != (e[:, 1] == 0)).all()
      turn = e[:, 0] * np.roll(e[:, 1], -1) - e[:, 1] * np.roll(e[:, 0], -1)
      assert (turn != 0).all()


def test_components_holes_and_tfdet_rasterizer():
  mask = np.zeros((32, 32), bool)
  mask[2:12, 3:15] = True  # a ring: its hole is filled
  mask[5:9, 6:11] = False
  mask[6:8, 8] = True  # an island in the hole: covered, dropped
  mask[20:30, 20:25] = True  # a second component
  mask[19, 19] = True  # touches it at a corner only: a separate component (4-connectivity)
  mask[14, 28] = mask[15, 29] = True  # two diagonal pixels: two components
  polygons = m2p.mask_to_polygons(mask, tolerance=0)
  assert len(polygons) == 5
  assert polygons[0] == [3, 2, 15, 2, 15, 12, 3, 12]
  assert polygons[1] == [20, 20, 25, 20, 25, 30, 20, 30]
  expected = mask.copy()
  expected[5:9, 6:11] = True
  np.testing.assert_array_equal(_rasterize(polygons, 32, 32), expected)
  # The tfdet mask-target rasterizer, on a box equal to the image.
  verts = np.concatenate([np.reshape(p, (-1, 2)) for p in polygons]).astype(np.float32)
  ids = np.concatenate([np.full(len(p) // 2, k) for k, p in enumerate(polygons)]).astype(np.int32)
  out = mask_targets.rasterize_polygons_in_boxes(
      tf.constant(verts[None]), tf.constant(ids[None]), tf.constant([[0.0, 0.0, 32.0, 32.0]]), 32)
  np.testing.assert_array_equal(out.numpy()[0].astype(bool), expected)


def test_simplification_error_bound():
  """Pixel decisions change only within `tolerance` of the exact outline; fewer vertices."""
  rng = np.random.default_rng(1)
  ious = []
  for tolerance in (0.49, 1.0, 2.0):
    for _ in range(5):
      h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
      mask = _blobs(rng, h, w, fill=rng.uniform(0.2, 0.5), smooth=int(rng.integers(2, 5)))
      exact = m2p.mask_to_polygons(mask, tolerance=0)
      simple = m2p.mask_to_polygons(mask, tolerance=tolerance)
      assert len(simple) == len(exact) and all(len(p) >= 6 for p in simple)
      assert _num_vertices(simple) < _num_vertices(exact)
      truth = _rasterize(exact, h, w)
      changed = _rasterize(simple, h, w) != truth
      dist = _boundary_distance(exact, h, w)
      assert (dist[changed] <= tolerance + 1e-9).all(), dist[changed].max()
      if tolerance < 0.5:  # every pixel centre is >= 0.5 from the outline: still exact
        assert not changed.any()
      if tolerance == 1.0:
        for pe, ps in zip(exact, simple, strict=True):  # per component
          one = _rasterize([pe], h, w)
          if one.sum() >= 20:
            mine = _rasterize([ps], h, w)
            ious.append(((one & mine).sum() / (one | mine).sum(), one.sum()))
  ious = np.array(ious)
  assert len(ious) > 10
  # At 1 pixel a blob of a few dozen pixels can lose a corner pixel or two.
  assert ious[:, 0].mean() > 0.9 and (ious[ious[:, 1] >= 100, 0] > 0.85).all(), ious


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 5.0])
def test_tiny_components_are_kept(tolerance):
  mask = np.zeros((12, 16), bool)
  mask[1, 1] = True  # one pixel
  mask[4, 3:5] = True  # a domino
  mask[8, 8] = mask[9, 9] = True  # diagonal neighbours: two components
  mask[2:4, 12] = True
  mask[3, 13] = True  # an L-tromino
  polygons = m2p.mask_to_polygons(mask, tolerance=tolerance)
  assert len(polygons) == 5
  assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
  if tolerance == 0:
    np.testing.assert_array_equal(_rasterize(polygons, 12, 16), mask)
  assert m2p.mask_to_polygons(np.zeros((5, 5)), tolerance) == []
  full = m2p.mask_to_polygons(np.ones((3, 4)), tolerance)
  assert full == [[0, 0, 4, 0, 4, 3, 0, 3]]  # the image border is not a problem


def test_bad_arguments():
  with pytest.raises(ValueError, match="tolerance"):
    m2p.mask_to_polygons(np.ones((2, 2)), -1.0)
  with pytest.raises(ValueError, match="2-D"):
    m2p.mask_to_polygons(np.ones((2, 2, 1)))


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_converter_traces_non_crowd_rle(tmp_path, tolerance):
  path, image_dir, data = tiny_coco(str(tmp_path / "src"), num_images=1)
  h, w = 20, 30
  mask = _blobs(np.random.default_rng(5), h, w, fill=0.35, smooth=2)
  mask[2:10, 2:12] = True
  mask[4:7, 4:8] = False  # a hole
  flat = mask.astype(np.uint8).reshape(-1, order="F")
  changes = np.flatnonzero(np.diff(flat)) + 1
  counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  if flat[0]:
    counts = [0] + counts
  crowd = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  common = {"image_id": 10, "category_id": 7, "area": float(mask.sum()),
            "bbox": [0.0, 0.0, 30.0, 20.0]}
  data["annotations"] += [
      dict(common, id=1, iscrowd=0, segmentation={"size": [h, w], "counts": counts}),
      dict(common, id=2, iscrowd=1, segmentation={"size": [h, w],
                                                 "counts": crowd["counts"].decode()}),
  ]
  save_json(path, data)
  out = str(tmp_path / "out")
  summary = c2t.convert_coco(path, image_dir, out, polygon_tolerance=tolerance)
  assert summary["rle_to_polygons"] == 1 and summary["instances"] == 3
  (rec,) = read_records(glob.glob(os.path.join(out, "*.tfrecord")))
  per_instance = list(rec[schema.POLYGONS_PER_INSTANCE])
  assert per_instance[0] == 1 and per_instance[2] == 0  # crowd: RLE only
  lengths = rec[schema.POLYGON_LENGTHS]
  ends = np.cumsum(lengths)
  polygons = [rec[schema.POLYGON_XY][e - n:e] for n, e in zip(lengths, ends, strict=True)]
  traced = polygons[1:1 + per_instance[1]]
  assert per_instance[1] == len(m2p.mask_to_polygons(mask)) > 1
  decoded = mask_utils.decode({"size": [h, w], "counts": rec[schema.MASK_RLE][1]})
  np.testing.assert_array_equal(decoded, mask)  # the RLE is kept
  raster = _rasterize(traced, h, w)
  if tolerance == 0:
    np.testing.assert_array_equal(raster, _fill_holes(mask))
  else:
    iou = (raster & mask).sum() / (raster | mask).sum()
    assert iou > 0.85, iou
  assert rec[schema.MASK_RLE][2] == crowd["counts"]
  with pytest.raises(ValueError, match="polygon_tolerance"):
    c2t.convert_coco(path, image_dir, out, polygon_tolerance=-1)


def test_adaptive_tolerance_is_lossless_within_budget_and_coarser_beyond():
  yy, xx = np.mgrid[0:80, 0:80]
  disc = ((yy - 40) ** 2 + (xx - 40) ** 2) < 30 ** 2
  polys, tol = m2p.mask_to_polygons_within(disc, max_vertices=10_000)
  assert tol == m2p.LOSSLESS_TOLERANCE
  assert polys == m2p.mask_to_polygons(disc, m2p.LOSSLESS_TOLERANCE)
  polys, tol = m2p.mask_to_polygons_within(disc, max_vertices=40)
  assert tol > m2p.LOSSLESS_TOLERANCE
  assert sum(len(p) // 2 for p in polys) <= 40
