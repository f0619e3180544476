"""add_proposals: pickle and npz round trips, top-k, missing images, shape errors, unsafe files."""

import glob
import os
import pickle

import numpy as np
import pytest

from data_prep import add_proposals as ap
from data_prep import coco_to_tfrecord as c2t
from data_prep.coco_annotations import BadInputError
from tests.data_prep.conftest import read_records
from tfdet.data import proposal_files, schema


def _proposals(ids):
  rng = np.random.default_rng(0)
  boxes = [np.float32(rng.uniform(0, 20, (n, 4))) for n in (4, 0, 3)][:len(ids)]
  scores = [np.float32(rng.uniform(0, 1, len(b))) for b in boxes]
  return {"boxes": boxes, "scores": scores, "ids": list(ids)}


@pytest.fixture
def shards(tiny, tmp_path):
  path, image_dir, _ = tiny
  out = str(tmp_path / "records")
  c2t.convert_coco(path, image_dir, out, num_shards=2)
  return sorted(glob.glob(os.path.join(out, "*.tfrecord")))


@pytest.mark.parametrize("fmt", ["pkl", "npz"])
def test_round_trip_and_top_k(shards, tmp_path, fmt):
  props = _proposals([12, 10, 11])
  file = str(tmp_path / f"props.{fmt}")
  if fmt == "pkl":
    with open(file, "wb") as f:
      pickle.dump(props, f)
  else:
    proposal_files.save_proposals_npz(file, props["boxes"], props["scores"], props["ids"])
  out = str(tmp_path / "with_props")
  summary = ap.add_proposals(file, shards, out, top_k=2)
  assert summary["records"] == 3 and summary["missing"] == 0
  assert os.path.exists(os.path.join(out, schema.LABEL_MAP_FILE))
  before = read_records(shards)
  after = read_records(sorted(glob.glob(os.path.join(out, "*.tfrecord"))))
  by_id = dict(zip(props["ids"], zip(props["boxes"], props["scores"], strict=True), strict=True))
  for old, new in zip(before, after, strict=True):
    boxes, scores = by_id[int(new[schema.IMAGE_ID])]
    order = np.argsort(-scores, kind="stable")[:2]
    np.testing.assert_array_equal(new[schema.PROPOSAL_BOXES].reshape(-1, 4), boxes[order])
    np.testing.assert_array_equal(new[schema.PROPOSAL_SCORES], scores[order])
    for key in (schema.IMAGE_ENCODED, schema.BOX_XYWH, schema.POLYGON_XY, schema.ANNOTATION_ID):
      np.testing.assert_array_equal(old[key], new[key])


def test_missing_images_and_bad_shapes(shards, tmp_path):
  file = str(tmp_path / "props.pkl")
  with open(file, "wb") as f:
    pickle.dump(_proposals([10, 11]), f)
  with pytest.raises(BadInputError, match="no proposals for image id 12"):
    ap.add_proposals(file, shards, str(tmp_path / "a"))
  summary = ap.add_proposals(file, shards, str(tmp_path / "b"), allow_missing=True)
  assert summary["missing"] == 1
  props = _proposals([10, 11, 12])
  props["scores"][0] = props["scores"][0][:2]
  with open(file, "wb") as f:
    pickle.dump(props, f)
  with pytest.raises(BadInputError, match="image id 10: 4 boxes but scores"):
    ap.add_proposals(file, shards, str(tmp_path / "c"))
  props = _proposals([10, 11, 12])
  props["boxes"][2] = props["boxes"][2][:, :3]
  with open(file, "wb") as f:
    pickle.dump(props, f)
  with pytest.raises(BadInputError, match=r"image id 12: boxes have shape \(3, 3\)"):
    ap.add_proposals(file, shards, str(tmp_path / "d"))
  with pytest.raises(ValueError, match="overwrite its input"):
    ap.add_proposals(file, shards, os.path.dirname(shards[0]))


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_unsafe_and_damaged_proposal_files_are_refused_before_anything_is_written(shards,
                                                                                   tmp_path):
  marker = tmp_path / "ran"
  props = _proposals([10, 11, 12])
  props["cfg"] = _RunsCommand(f"touch {marker}")
  cases = {}
  cases["evil.pkl"] = pickle.dumps(props, protocol=2)
  cases["cut.pkl"] = pickle.dumps(_proposals([10, 11, 12]))[:-40]
  npz = tmp_path / "objects.npz"
  good = _proposals([10, 11, 12])
  np.savez(npz, boxes=np.array(good["boxes"], dtype=object),
           scores=np.array(good["scores"], dtype=object), ids=np.array(good["ids"]),
           counts=np.array([4, 0, 3]))
  messages = {"evil.pkl": r"evil\.pkl: refused posix\.system.*not loaded",
              "cut.pkl": r"cut\.pkl: not a readable pickle \(truncated or corrupt",
              "objects.npz": r"objects\.npz: array 'boxes' holds Python objects, which are refused",
              "absent.pkl": r"absent\.pkl: cannot read the proposal file"}
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
  for name, pattern in messages.items():
    out = tmp_path / ("out_" + name)
    with pytest.raises(BadInputError, match=pattern):
      ap.add_proposals(str(tmp_path / name), shards, str(out))
    assert not out.exists()
  assert not marker.exists()


def test_npz_layout_errors(tmp_path):
  file = str(tmp_path / "p.npz")
  np.savez(file, boxes=np.zeros((3, 4)), scores=np.zeros(3), ids=np.array([1, 2]))
  with pytest.raises(BadInputError, match=r"p\.npz: \.npz proposal file lacks \['counts'\]"):
    ap.load_proposals(file)
  np.savez(file, boxes=np.zeros((3, 4)), scores=np.zeros(3), ids=np.array([1, 2]),
           counts=np.array([1, 1]))
  with pytest.raises(BadInputError, match=r"counts \[1, 1\] do not split 3 boxes over 2 ids"):
    ap.load_proposals(file)
  proposal_files.save_proposals_npz(file, [], [], [])
  assert ap.load_proposals(file) == {}
