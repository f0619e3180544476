"""Tiny hand-made COCO data sets for the data_prep tests."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import testdata
from tfdet.data import schema

SAMPLE_DIR = testdata.COCO_SAMPLE_DIR
SAMPLE_JSON = testdata.COCO_SAMPLE_JSON


def write_jpeg(path, height, width, seed=0):
  pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
  tf.io.write_file(path, tf.io.encode_jpeg(pixels))


def tiny_coco(root, num_images=3):
  """Writes ``num_images`` 20x30 JPEGs and an instances json with one plain polygon each.

  Returns (json path, image dir, the json dict).
  """
  image_dir = os.path.join(root, "images")
  os.makedirs(image_dir, exist_ok=True)
  images, annotations = [], []
  for i in range(num_images):
    image_id = 10 + i
    name = f"{image_id:06d}.jpg"
    write_jpeg(os.path.join(image_dir, name), 20, 30, seed=i)
    images.append({"id": image_id, "file_name": name, "height": 20, "width": 30})
    annotations.append({"id": 100 + i, "image_id": image_id, "category_id": 7, "iscrowd": 0,
                        "bbox": [2.0, 3.0, 10.0, 8.0], "area": 80.0,
                        "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 11.0, 2.0, 11.0]]})
  data = {"images": images, "annotations": annotations,
          "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]}
  path = os.path.join(root, "instances_tiny.json")
  save_json(path, data)
  return path, image_dir, data


def save_json(path, data):
  with open(path, "w") as f:
    json.dump(data, f)


def read_records(paths):
  """Parses every record of the given shards (in order) with the schema's spec."""
  out = []
  for path in sorted(paths):
    for record in tf.data.TFRecordDataset(path):
      parsed = tf.io.parse_single_example(record, schema.feature_spec())
      out.append({k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy()
                  for k, v in parsed.items()})
  return out


@pytest.fixture
def tiny(tmp_path):
  return tiny_coco(str(tmp_path / "src"))
