"""Atomic, resumable TFRecord shard writing.

A shard is written to ``<name>.tmp-<pid>`` and renamed into place with
`os.replace` once closed, so a shard file that exists is complete. A small
manifest json beside the shards (``<prefix>-manifest.json``) records the
finished shards (record count, size, per-shard statistics) and a
fingerprint of the inputs and options; a rerun with the same fingerprint
skips the finished shards, a rerun with another fingerprint redoes all.
"""

import hashlib
import json
import os

import tensorflow as tf


def shard_name(prefix, index, num_shards):
  """``{prefix}-00000-of-00008.tfrecord``."""
  return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def manifest_path(output_dir, prefix):
  return os.path.join(output_dir, f"{prefix}-manifest.json")


def fingerprint(*, files=(), options=None, extra=()):
  """A sha256 over the contents of ``files``, a json of ``options`` and ``extra`` strings."""
  h = hashlib.sha256()
  for path in files:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  h.update(json.dumps(options or {}, sort_keys=True).encode())
  for item in extra:
    h.update(str(item).encode())
    h.update(b"\0")
  return h.hexdigest()


def write_json_atomic(path, obj):
  """Writes json to ``path.tmp-<pid>`` and renames it into place."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def write_shard_atomic(path, serialized_records):
  """Writes an iterable of serialized records to ``path`` atomically; returns the count.

  On any error the temporary file is removed and nothing appears at ``path``.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in serialized_records:
        writer.write(record)
        count += 1
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return count


def remove_leftover_tmp(output_dir, prefix):
  """Removes ``{prefix}-*.tmp-*`` files an interrupted run left; returns their names."""
  removed = []
  for name in sorted(os.listdir(output_dir)):
    if name.startswith(prefix + "-") and ".tmp-" in name:
      os.remove(os.path.join(output_dir, name))
      removed.append(name)
  return removed


class Manifest:
  """The finished shards of one job, keyed by file name, and the job's fingerprint."""

  def __init__(self, output_dir, prefix, job_fingerprint, num_shards):
    self.path = manifest_path(output_dir, prefix)
    self.output_dir = output_dir
    self.fingerprint = job_fingerprint
    self.num_shards = num_shards
    self.shards = {}

  @classmethod
  def load_or_reset(cls, output_dir, prefix, job_fingerprint, num_shards):
    """The manifest of a matching earlier run (its stale or missing shards dropped), or a new one.

    With a different fingerprint the shards the old manifest lists are deleted.
    """
    manifest = cls(output_dir, prefix, job_fingerprint, num_shards)
    if not os.path.exists(manifest.path):
      return manifest
    with open(manifest.path) as f:
      old = json.load(f)
    if old.get("fingerprint") != job_fingerprint or old.get("num_shards") != num_shards:
      for name in old.get("shards", {}):
        path = os.path.join(output_dir, name)
        if os.path.exists(path):
          os.remove(path)
      os.remove(manifest.path)
      return manifest
    for name, info in old.get("shards", {}).items():
      path = os.path.join(output_dir, name)
      if os.path.exists(path) and os.path.getsize(path) == info.get("bytes"):
        manifest.shards[name] = info
    return manifest

  def is_done(self, name):
    return name in self.shards

  def add(self, name, records, stats=None):
    """Records a finished shard and rewrites the manifest atomically."""
    self.shards[name] = {"records": records,
                         "bytes": os.path.getsize(os.path.join(self.output_dir, name)),
                         "stats": stats or {}}
    self.save()

  def save(self):
    write_json_atomic(self.path, {"fingerprint": self.fingerprint, "num_shards": self.num_shards,
                                  "shards": self.shards})
