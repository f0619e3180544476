"""The synthetic COCO data set: determinism, coverage, mask consistency, clean conversion."""

import collections
import glob
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from data_prep import shard_writer
from tfdet.data import schema, synthetic

_SMALL = {"num_train_images": 8, "num_val_images": 2, "image_size": (128, 160)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic"))
  return root, synthetic.ensure_synthetic_tfrecords(root, seed=3, **_SMALL)


def _files(root):
  out = {}
  for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
    if os.path.isfile(path) and (path.endswith(".jpg") or path.endswith(".json")):
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_deterministic_from_seed(generated, tmp_path):
  root, _ = generated
  again = str(tmp_path / "again")
  synthetic.generate_synthetic_coco(again, seed=3, **_SMALL)
  first = _files(os.path.join(root, "coco"))
  assert len(first) == 8 + 2 + 4 + 1 and first == _files(again)
  other = str(tmp_path / "other")
  synthetic.generate_synthetic_coco(other, seed=4, **_SMALL)
  assert _files(other) != first


def test_coverage_and_masks(generated):
  root, _ = generated
  coco = COCO(os.path.join(root, "coco", "annotations", "instances_train.json"))
  anns = list(coco.anns.values())
  sizes = collections.Counter("small" if a["area"] < 32 ** 2 else
                              "large" if a["area"] > 96 ** 2 else "medium" for a in anns)
  assert min(sizes["small"], sizes["medium"], sizes["large"]) > 0, sizes
  assert any(a["iscrowd"] for a in anns)
  occluded = [a for a in anns if not a["iscrowd"] and isinstance(a["segmentation"], dict)]
  assert occluded  # partly covered objects carry their visible mask as RLE
  assert len({a["category_id"] for a in anns}) == len(synthetic.CATEGORIES)
  for a in anns:  # areas and boxes are those of the (visible) mask
    m = coco.annToMask(a).astype(bool)
    assert m.sum() == a["area"], a["id"]
    ys, xs = np.nonzero(m)
    np.testing.assert_allclose(a["bbox"], [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                           ys.max() - ys.min() + 1])
  with open(os.path.join(root, "coco", "annotations", "person_keypoints_train.json")) as f:
    kps = json.load(f)
  assert [c["name"] for c in kps["categories"]] == ["person"]
  assert tuple(kps["categories"][0]["keypoints"]) == schema.KEYPOINT_NAMES
  flags = collections.Counter()
  for a in kps["annotations"]:
    v = a["keypoints"][2::3]
    flags.update(v)
    assert a["num_keypoints"] == sum(1 for f in v if f > 0)
    img = coco.imgs[a["image_id"]]
    for x, y, f in np.reshape(a["keypoints"], (-1, 3)):
      assert (0 <= x < img["width"] and 0 <= y < img["height"]) if f else x == y == 0
  assert set(flags) == {0, 1, 2}, flags


def test_converts_cleanly(generated):
  root, paths = generated
  for kind in ("instances", "person_keypoints"):
    with open(shard_writer.manifest_path(os.path.join(root, "tfrecords", kind), "train")) as f:
      manifest = json.load(f)
    stats = [s["stats"] for s in manifest["shards"].values()]
    assert sum(s["images"] for s in stats) == 8
    assert not any(s["skipped"] for s in stats)
    assert sum(s["rle_to_polygons"] for s in stats) > 0  # occluded objects get polygons
    assert len(glob.glob(paths[kind]["train"])) == 2 and len(glob.glob(paths[kind]["val"])) == 1
  with open(paths["label_map"]["instances"]) as f:
    classes = json.load(f)["classes"]
  assert [classes[str(i + 1)]["category_id"] for i in range(len(classes))] == [
      c for c, _ in synthetic.CATEGORIES]
  # Idempotent: a second call finds everything done and rewrites nothing.
  shard = glob.glob(paths["instances"]["train"])[0]
  os.utime(shard, ns=(0, 0))
  synthetic.ensure_synthetic_tfrecords(root, seed=3, **_SMALL)
  assert os.stat(shard).st_mtime_ns == 0


def test_simple_style(tmp_path):
  """The quickstart's style: plain scenes of 1-4 separate, medium-or-larger, uncrowded objects."""
  root = str(tmp_path / "simple")
  synthetic.generate_synthetic_coco(root, seed=5, num_train_images=12, num_val_images=1,
                                    image_size=(160, 224), style="simple")
  coco = COCO(os.path.join(root, "annotations", "instances_train.json"))
  per_image = collections.Counter(a["image_id"] for a in coco.anns.values())
  assert len(per_image) == 12 and set(per_image.values()) <= {1, 2, 3, 4}
  categories = set()
  for image_id in coco.getImgIds():
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    union = np.zeros((coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]), int)
    for a in anns:
      assert not a["iscrowd"] and isinstance(a["segmentation"], list)  # nothing covered
      mask = coco.annToMask(a)
      assert mask.sum() == a["area"]
      union += mask
      categories.add(a["category_id"])
      if a["bbox"][0] > 0 and a["bbox"][1] > 0:  # not cut by the top/left border
        assert a["area"] >= 0.25 * 24 ** 2
    assert union.max() == 1  # no two objects overlap
  assert len(categories) >= 5
  with open(os.path.join(root, "synthetic_config.json")) as f:
    assert json.load(f)["style"] == "simple"
  with pytest.raises(ValueError, match="style"):
    synthetic.generate_synthetic_coco(str(tmp_path / "bad"), seed=5, num_train_images=1,
                                      num_val_images=1, style="fancy")


def test_standard_style_config_unchanged(generated):
  """The standard set's config (its cache key) has no style entry: old data sets stay valid."""
  root, _ = generated
  with open(os.path.join(root, "coco", "synthetic_config.json")) as f:
    assert "style" not in json.load(f)
