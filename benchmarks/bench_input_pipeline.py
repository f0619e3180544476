"""Throughput of the tfdet input pipeline on synthetic COCO-sized records.

Writes `--num_images` 640x480 (and some 480x640) JPEGs with about 7 polygon
instances each to a temporary directory, then times the training pipeline
(random scale/flip, aspect grouping, FPN padding) and the eval pipeline,
after warm-up, and prints images/s.

  python benchmarks/bench_input_pipeline.py --num_images 64 --batches 40
"""

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfdet.data import keys, pipeline, schema


def _synthetic_image(rng, height, width):
  """A smooth random image (JPEG-compresses like a photo, unlike white noise)."""
  low = rng.uniform(0, 255, [height // 32 + 1, width // 32 + 1, 3]).astype(np.float32)
  image = tf.image.resize(low[None], [height, width], method="bicubic")[0]
  image += rng.normal(0, 8, [height, width, 3]).astype(np.float32)
  return tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)


def _synthetic_example(rng, image_id, height, width, num_instances):
  boxes, polygons = [], []
  for _ in range(num_instances):
    w, h = rng.uniform(20, width / 2), rng.uniform(20, height / 2)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    boxes.append([x, y, w, h])
    n = int(rng.integers(8, 40))  # vertices on an ellipse inside the box
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = np.stack([x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))], axis=1)
    polygons.append([xy.ravel().tolist()])
  return schema.make_example(
      encoded_image=tf.io.encode_jpeg(_synthetic_image(rng, height, width), quality=90).numpy(),
      image_format="jpeg", image_id=image_id, filename=f"{image_id}.jpg", height=height,
      width=width, boxes_xywh=boxes, classes=rng.integers(1, 81, num_instances).tolist(),
      category_ids=[1] * num_instances, is_crowd=[0] * num_instances,
      areas=[b[2] * b[3] for b in boxes], annotation_ids=list(range(num_instances)),
      polygons=polygons, rles=[b""] * num_instances)


def write_records(directory, num_images, num_files=4, seed=0):
  """Writes the synthetic shards; returns their glob pattern."""
  rng = np.random.default_rng(seed)
  writers = [tf.io.TFRecordWriter(str(Path(directory) / f"bench-{i:02d}.tfrecord"))
             for i in range(num_files)]
  for i in range(num_images):
    height, width = (640, 480) if i % 4 == 3 else (480, 640)  # 1 in 4 portrait
    example = _synthetic_example(rng, i, height, width, int(rng.integers(4, 11)))
    writers[i % num_files].write(example.SerializeToString())
  for w in writers:
    w.close()
  return str(Path(directory) / "bench-*.tfrecord")


def time_dataset(ds, *, warmup, batches):
  """(images/s, batches timed) after `warmup` batches."""
  it = iter(ds)
  for batch in itertools.islice(it, warmup):
    batch[keys.IMAGES].numpy()
  images, count, start = 0, 0, time.perf_counter()
  for batch in itertools.islice(it, batches):
    images += int(np.sum(batch[keys.IMAGE_ID].numpy() >= 0))
    count += 1
  return images / (time.perf_counter() - start), count


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
  parser.add_argument("--batches", type=int, default=40, help="training batches timed")
  parser.add_argument("--num_parallel_calls", type=int, default=-1, help="-1: AUTOTUNE")
  args = parser.parse_args()
  common = dict(batch_size=args.batch_size, scales=(800,), max_size=1333, size_divisibility=32,
                num_parallel_calls=args.num_parallel_calls)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    pattern = write_records(tmp, args.num_images)
    print(f"wrote {args.num_images} records in {time.perf_counter() - start:.1f} s")
    rows = []
    train = pipeline.build_dataset(pattern, mode="train", seed=0, shuffle_buffer=64, **common)
    rows.append(("train (flip, group, pad 800x1344)",
                 *time_dataset(train, warmup=args.warmup, batches=args.batches)))
    eval_batches = -(-args.num_images // args.batch_size) - args.warmup
    evaluation = pipeline.build_dataset(pattern, mode="eval", **common)
    rows.append(("eval (one pass, ordered)",
                 *time_dataset(evaluation, warmup=args.warmup, batches=eval_batches)))
  print(f"{'pipeline':40s} {'images/s':>10s} {'batches':>8s}")
  for name, rate, count in rows:
    print(f"{name:40s} {rate:10.1f} {count:8d}")


if __name__ == "__main__":
  main()
