"""Input pipeline: grouping, filtering, determinism, sharding, eval mapping, proposals."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import keys, pipeline, schema

COLOR = (10, 20, 30)  # RGB of every test image


def _record(image_id, height, width, *, boxes=((2, 3, 10, 6),), crowd=None, keypoints=False,
            proposals=None):
  n = len(boxes)
  crowd = crowd or [0] * n
  image = np.zeros([height, width, 3], np.uint8) + np.array(COLOR, np.uint8)
  kps = None
  if keypoints:
    kps = [[0.0] * 51 for _ in range(n)]
    kps[0][15:18] = [4.0, 5.0, 2.0]  # left_shoulder
  example = schema.make_example(
      encoded_image=tf.io.encode_png(image).numpy(), image_format="png", image_id=image_id,
      filename=f"{image_id}.png", height=height, width=width, boxes_xywh=[list(b) for b in boxes],
      classes=[1 + i % 3 for i in range(n)], category_ids=[1] * n, is_crowd=crowd,
      areas=[10.0] * n, annotation_ids=list(range(n)),
      polygons=[[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3]]] if not c else []
                for b, c in zip(boxes, crowd, strict=True)],
      rles=[b"x" if c else b"" for c in crowd], keypoints=kps)
  if proposals is not None:
    example.features.feature[schema.PROPOSAL_BOXES].float_list.value.extend(
        np.ravel(proposals).tolist())
  return example.SerializeToString()


def _write(tmp_path, records, num_files=1):
  for f in range(num_files):
    with tf.io.TFRecordWriter(str(tmp_path / f"data-{f:02d}.tfrecord")) as w:
      for r in records[f::num_files]:
        w.write(r)
  return str(tmp_path / "data-*.tfrecord")


def _mixed(n=12):
  """Alternating landscape (20x30) and portrait (30x20) images, ids 0..n-1."""
  return [_record(i, 20, 30) if i % 2 == 0 else _record(i, 30, 20) for i in range(n)]


SMALL = dict(scales=(32,), max_size=64, size_divisibility=16, max_instances=4,
             max_polygon_vertices=8, num_parallel_calls=1, cycle_length=2, prefetch=1)


def _take(ds, n):
  return [{k: v.numpy() for k, v in b.items()} for b in itertools.islice(ds, n)]


def test_train_aspect_grouping_and_static_shapes(tmp_path):
  pattern = _write(tmp_path, _mixed(), num_files=2)
  ds = pipeline.build_dataset(pattern, mode="train", batch_size=2, seed=1, deterministic=True,
                              shuffle_buffer=8, **SMALL)
  for batch in _take(ds, 8):
    info = batch[keys.IMAGE_INFO]
    landscape = info[:, 4] >= info[:, 3]
    assert landscape.all() or not landscape.any()  # no mixed batch
    # landscape canvas [32, 64], portrait [64, 32]: scale 32 / 20 = 1.6, 30 -> 48.
    assert batch[keys.IMAGES].shape == ((2, 32, 64, 3) if landscape[0] else (2, 64, 32, 3))
    np.testing.assert_allclose(info[:, 2], 1.6)
    np.testing.assert_allclose(np.sort(info[:, :2], axis=1), [[32, 48]] * 2)
    assert batch[keys.GT_BOXES].shape == (2, 4, 4)
    assert batch[keys.GT_POLYGONS].shape == (2, 4, 8, 2)
    assert batch[keys.GT_KEYPOINTS].shape == (2, 4, 17, 3)
    np.testing.assert_array_equal(batch[keys.NUM_GT], [1, 1])
    np.testing.assert_array_equal(batch[keys.GT_VALID][:, :2], [[True, False]] * 2)
    assert batch[keys.IMAGE_ID].dtype == np.int64 and batch[keys.GT_CLASSES].dtype == np.int32


def test_mean_subtraction_bgr_and_zero_padding(tmp_path):
  pattern = _write(tmp_path, [_record(0, 20, 30)])
  batch = _take(pipeline.build_dataset(pattern, mode="eval", batch_size=1, **SMALL), 1)[0]
  image = batch[keys.IMAGES][0]
  expected = np.array(COLOR[::-1]) - np.array([102.9801, 115.9465, 122.7717])
  np.testing.assert_allclose(image[:32, :48], np.broadcast_to(expected, [32, 48, 3]), atol=1e-3)
  assert np.all(image[:, 48:] == 0.0)


def test_filter_empty_and_keypoints_only(tmp_path):
  records = [
      _record(0, 20, 30),  # plain instance
      _record(1, 20, 30, boxes=()),  # no annotations
      _record(2, 20, 30, boxes=((1, 1, 8, 8),), crowd=[1]),  # crowd only
      _record(3, 20, 30, keypoints=True),  # visible keypoints
      _record(4, 20, 30, boxes=((2, 3, 10, 6), (1, 1, 8, 8)), crowd=[0, 1]),
  ]
  pattern = _write(tmp_path, records)

  def ids(**kwargs):
    ds = pipeline.build_dataset(pattern, mode="train", batch_size=1, seed=0, shuffle_buffer=1,
                                flip_probability=0.0, deterministic=True, **SMALL, **kwargs)
    return {int(b[keys.IMAGE_ID][0]) for b in _take(ds, 12)}

  assert ids() == {0, 3, 4}
  assert ids(filter_empty=False) == {0, 1, 2, 3, 4}
  assert ids(keypoints_only=True) == {3}


def test_deterministic_runs_are_identical(tmp_path):
  pattern = _write(tmp_path, _mixed(), num_files=3)
  kwargs = dict(mode="train", batch_size=2, seed=7, deterministic=True, shuffle_buffer=6,
                **{**SMALL, "scales": (24, 32)})
  a = _take(pipeline.build_dataset(pattern, **kwargs), 6)
  b = _take(pipeline.build_dataset(pattern, **kwargs), 6)
  for x, y in zip(a, b, strict=True):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  # The runs are random, not constant: more than one scale is drawn.
  assert len({float(s) for x in a for s in x[keys.IMAGE_INFO][:, 2]}) > 1


@pytest.mark.parametrize("num_files", [4, 1])
def test_sharding_with_input_context(tmp_path, num_files):
  pattern = _write(tmp_path, _mixed(8), num_files=num_files)
  seen = []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=2)
    ds = pipeline.build_dataset(pattern, mode="eval", batch_size=2, input_context=ctx, **SMALL)
    seen.append({int(i) for b in _take(ds, 100) for i in b[keys.IMAGE_ID] if i >= 0})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(8))


def test_eval_keeps_every_image_pads_final_batch_and_maps_back(tmp_path):
  records = [_record(0, 20, 30, boxes=((2, 3, 10, 6), (5, 5, 4, 4))), _record(1, 20, 30, boxes=()),
             _record(2, 30, 20), _record(3, 25, 30)]
  pattern = _write(tmp_path, records)
  ds = pipeline.build_dataset(pattern, mode="eval", batch_size=2, convention="detectron",
                              **SMALL)
  batches = _take(ds, 10)
  assert len(batches) == 3  # landscape [0, 1], landscape [3, pad], portrait [2, pad]
  ids = [b[keys.IMAGE_ID].tolist() for b in batches]
  assert sorted(i for b in ids for i in b) == [-1, -1, 0, 1, 2, 3]
  for b in batches:
    assert b[keys.IMAGES].shape[0] == 2
    pad = b[keys.IMAGE_ID] < 0
    assert np.all(b[keys.NUM_GT][pad] == 0) and np.all(b[keys.IMAGES][pad] == 0)
  first = batches[0]
  assert first[keys.IMAGE_ID].tolist() == [0, 1]
  scale = first[keys.IMAGE_INFO][0, 2]
  np.testing.assert_allclose(first[keys.GT_BOXES][0, :2] / scale,
                             [[2, 3, 11, 8], [5, 5, 8, 8]], rtol=1e-5)
  np.testing.assert_allclose(first[keys.IMAGE_INFO][:, 3:], [[20, 30], [20, 30]])
  assert first[keys.NUM_GT].tolist() == [2, 0]
  unpadded = _take(pipeline.build_dataset(pattern, mode="eval", batch_size=2,
                                          pad_final_batch=False, **SMALL), 10)
  assert sorted(b[keys.IMAGE_ID].shape[0] for b in unpadded) == [1, 1, 2]


def test_no_aspect_grouping_gives_static_square_canvas(tmp_path):
  pattern = _write(tmp_path, _mixed(4))
  ds = pipeline.build_dataset(pattern, mode="train", batch_size=2, aspect_grouping=False,
                              seed=0, **SMALL)
  assert ds.element_spec[keys.IMAGES].shape.as_list() == [2, 64, 64, 3]
  assert _take(ds, 1)[0][keys.IMAGES].shape == (2, 64, 64, 3)


def test_proposals_flipped_scaled_padded(tmp_path):
  # "modern": the stored (inclusive) proposals get x2, y2 + 1; test_decoder covers "detectron".
  convention = "modern"
  pattern = _write(tmp_path, [_record(0, 20, 30, proposals=[[1, 2, 10, 12], [0, 0, 5, 5]])])
  ds = pipeline.build_dataset(pattern, mode="train", batch_size=1, with_proposals=True,
                              max_proposals=3, flip_probability=1.0, convention=convention,
                              seed=0, **SMALL)
  b = _take(ds, 1)[0]
  assert b[keys.PROPOSALS].shape == (1, 3, 4)
  np.testing.assert_array_equal(b[keys.PROPOSALS_VALID][0], [True, True, False])
  expected = np.array([[30 - 11, 2, 30 - 1, 13], [30 - 6, 0, 30, 6]])
  np.testing.assert_allclose(b[keys.PROPOSALS][0, :2], expected * 1.6, rtol=1e-5)
  with pytest.raises(ValueError):
    pipeline.build_dataset(pattern, mode="eval", batch_size=1, **{**SMALL, "scales": (1, 2)})
