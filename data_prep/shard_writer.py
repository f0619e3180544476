"""Atomic, resumable TFRecord shard writing, and the manifest of a conversion job.

A shard is written to a hidden ``.<name>.tmp-<pid>`` beside it and renamed
into place with `os.replace` once closed, so a shard file that exists is
complete, and a glob of the shards (``train-*``, ``*.tfrecord``) never matches
a half-written one.

The manifest, ``manifest-<prefix>.json`` beside the shards
(`tfdet.data.shard_files.manifest_file_name`; named so that ``<prefix>-*``
matches shards only), records:

* ``fingerprint``: of the inputs and options (a rerun with another one redoes
  everything);
* ``prefix``, ``num_shards`` and ``expected_shards`` (every shard name of the
  job, finished or not: the input pipeline refuses an unfinished set);
* ``shards``: per finished shard its record count, size, statistics,
  ``inputs`` (a digest of its image files' names, sizes and modification
  times) and ``skipped_images`` (the images skipped as bad, each with the
  sha256 of its content then), so that a rerun redoes a shard whose image
  files changed, for instance a corrupt image that was replaced.

Manifests of older converters (``<prefix>-manifest.json``, which ``<prefix>-*``
also matched) are read and replaced by the new name.
"""

import hashlib
import json
import os
import re

import tensorflow as tf

from data_prep import coco_annotations as anns
from tfdet.data import shard_files

MANIFEST_VERSION = 2


def shard_name(prefix, index, num_shards):
  """``{prefix}-00000-of-00008.tfrecord``."""
  return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def manifest_path(output_dir, prefix):
  """``{output_dir}/manifest-{prefix}.json``."""
  return os.path.join(output_dir, shard_files.manifest_file_name(prefix))


def legacy_manifest_path(output_dir, prefix):
  """Where converters before manifest version 2 wrote it: ``{prefix}-manifest.json``."""
  return os.path.join(output_dir, f"{prefix}-manifest.json")


def tmp_path(path):
  """The hidden temporary file a shard or json is written to before its rename."""
  head, tail = os.path.split(path)
  return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


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
  """Writes json to a temporary file beside ``path`` and renames it into place."""
  tmp = tmp_path(path)
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def write_shard_atomic(path, serialized_records, *, before_commit=None):
  """Writes an iterable of serialized records to ``path`` atomically; returns the count.

  Args:
    path: the shard file.
    serialized_records: iterable of bytes.
    before_commit: optional callable run after the last record, before the
      rename; it may raise to abandon the shard (a pool worker whose parent
      died does).

  On any error the temporary file is removed and nothing appears at ``path``.
  """
  tmp = tmp_path(path)
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in serialized_records:
        writer.write(record)
        count += 1
    if before_commit is not None:
      before_commit()
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return count


def remove_leftover_tmp(output_dir, prefix):
  """Removes the temporary shard files of ``prefix`` an interrupted run left; returns their names.

  Both the hidden ``.<shard>.tmp-<pid>`` names and the ``<shard>.tmp-<pid>``
  names of older converters are found; shards of other prefixes are left alone.
  """
  pattern = re.compile(r"\.?" + re.escape(prefix) + r"-\d{5}-of-\d{5}\.tfrecord\.tmp-\d+")
  removed = []
  for name in sorted(os.listdir(output_dir)):
    if pattern.fullmatch(name):
      os.remove(os.path.join(output_dir, name))
      removed.append(name)
  return removed


def _load_json(path):
  """A manifest's json object, or BadInputError naming the file."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise anns.BadInputError(f"{path}: unreadable manifest ({e}); delete it to convert everything "
                     "again") from None
  if not isinstance(data, dict):
    raise anns.BadInputError(f"{path}: a manifest is a json object, this holds a {type(data).__name__}; "
                     "delete it to convert everything again")
  return data


class Manifest:
  """The finished shards of one job, keyed by file name, and the job's fingerprint."""

  def __init__(self, output_dir, prefix, job_fingerprint, num_shards):
    self.path = manifest_path(output_dir, prefix)
    self.output_dir = output_dir
    self.prefix = prefix
    self.fingerprint = job_fingerprint
    self.num_shards = num_shards
    self.shards = {}

  @classmethod
  def load_or_reset(cls, output_dir, prefix, job_fingerprint, num_shards):
    """The manifest of a matching earlier run (its stale or missing shards dropped), or a new one.

    With a different fingerprint the shards the old manifest lists are
    deleted. An older converter's ``<prefix>-manifest.json`` is read when
    there is no new one, and removed either way (the new manifest replaces
    it). The returned manifest is saved, so that ``expected_shards`` is on
    disk before any shard is written.
    """
    manifest = cls(output_dir, prefix, job_fingerprint, num_shards)
    legacy = legacy_manifest_path(output_dir, prefix)
    source = manifest.path if os.path.exists(manifest.path) else (
        legacy if os.path.exists(legacy) else None)
    if source is not None:
      old = _load_json(source)
      if old.get("fingerprint") != job_fingerprint or old.get("num_shards") != num_shards:
        for name in old.get("shards", {}):
          path = os.path.join(output_dir, name)
          if os.path.exists(path):
            os.remove(path)
      else:
        for name, info in old.get("shards", {}).items():
          path = os.path.join(output_dir, name)
          if os.path.exists(path) and os.path.getsize(path) == info.get("bytes"):
            manifest.shards[name] = info
    manifest.save()
    if os.path.exists(legacy):
      os.remove(legacy)
    return manifest

  def expected_shards(self):
    """Every shard name of the job, in order."""
    return [shard_name(self.prefix, i, self.num_shards) for i in range(self.num_shards)]

  def check_shard(self, name, inputs, skipped_now):
    """Why shard ``name`` must be converted (again), or None when it is done and current.

    An older converter's entry (no digest, no list of skipped images) counts
    as current unless it skipped bad images; it then takes ``inputs`` as its
    digest (saved with the next `save`).

    Args:
      name: the shard's file name.
      inputs: the digest of its image files now (`image_files.files_digest`).
      skipped_now: {file name: sha256 of its content now, None when missing}
        of the images it skipped as bad (`skipped_files`).

    Returns:
      None (done and current), "" (never finished), or a sentence saying
      what changed.
    """
    info = self.shards.get(name)
    if info is None:
      return ""
    if "inputs" not in info:
      bad = info.get("stats", {}).get("skipped", {}).get(anns.SKIP_BAD_IMAGE, 0)
      if bad:
        return (f"it skipped {bad} bad image(s) and an older converter's manifest did not record "
                "which, so it is converted again in case they were fixed")
      info["inputs"], info["skipped_images"] = inputs, []
      return None
    for entry in info.get("skipped_images", []):
      if skipped_now.get(entry["file_name"]) != entry.get("sha256"):
        return (f"image {entry['file_name']} (id {entry['image_id']}), skipped as bad "
                f"({entry['error']}), has changed since")
    if info["inputs"] != inputs:
      return "some of its image files changed (size or modification time) since it was written"
    return None

  def skipped_files(self, name):
    """File names of the images shard ``name`` skipped as bad (empty when not done)."""
    return [e["file_name"] for e in self.shards.get(name, {}).get("skipped_images", [])]

  def drop(self, name):
    """Forgets a finished shard (it is about to be converted again) and saves."""
    if self.shards.pop(name, None) is not None:
      self.save()

  def is_done(self, name):
    return name in self.shards

  def add(self, name, records, stats=None, *, inputs=None, skipped_images=()):
    """Records a finished shard and rewrites the manifest atomically.

    Args:
      name: the shard's file name (in ``output_dir``).
      records: how many records it holds.
      stats: its statistics (json-ready).
      inputs: the digest of its image files when it was converted.
      skipped_images: dicts {image_id, file_name, error, sha256} of the
        images skipped as bad.
    """
    self.shards[name] = {"records": records,
                         "bytes": os.path.getsize(os.path.join(self.output_dir, name)),
                         "stats": stats or {}, "inputs": inputs,
                         "skipped_images": list(skipped_images)}
    self.save()

  def save(self):
    write_json_atomic(self.path, {"version": MANIFEST_VERSION, "fingerprint": self.fingerprint,
                                  "prefix": self.prefix, "num_shards": self.num_shards,
                                  "expected_shards": self.expected_shards(),
                                  "shards": self.shards})
