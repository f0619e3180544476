"""The shard files an input pattern names: checked before tf.data reads them.

`list_files` is what every reader of shards calls (the input pipeline,
evaluation, test-time augmentation). It refuses, naming each file, what
would otherwise reach tf.data as "corrupted record at 0" with no file named,
or be read without a word:

* a matched file that is not a TFRecord shard: a directory, an empty file, a
  json side file, a converter's temporary file (checked by the first record
  header: its length, 8 bytes little-endian, and the masked CRC-32C of those
  8 bytes);
* shards of an unfinished conversion, a shard that changed since, or a stray
  shard of an earlier one, as the converter's manifest beside them says
  (``manifest-<prefix>.json``, named so that the shards' glob ``<prefix>-*``
  does not match it; `data_prep.shard_writer` writes it).
"""

import json
import os
import re

import tensorflow as tf

MANIFEST_PREFIX = "manifest-"


def manifest_file_name(prefix):
  """The converter's manifest of the shards ``{prefix}-*``: ``manifest-{prefix}.json``.

  Named so that the glob ``{prefix}-*`` of the shards does not match it.
  """
  return f"{MANIFEST_PREFIX}{prefix}.json"


def _crc32c_entry(n):
  for _ in range(8):
    n = (n >> 1) ^ (0x82F63B78 if n & 1 else 0)  # the reflected Castagnoli polynomial
  return n


_CRC32C_TABLE = [_crc32c_entry(n) for n in range(256)]


def masked_crc32c(data):
  """TFRecord's masked CRC-32C (Castagnoli) of ``data`` (bytes), as an unsigned 32-bit int."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _not_a_shard(path, vouched_empty):
  """Why a matched file is not a TFRecord shard, or None.

  A shard starts with a record header: the record's length (8 bytes,
  little-endian) and the masked CRC-32C of those 8 bytes (4 bytes). An empty
  file holds no header; it is accepted only where the converter's manifest
  lists it as a finished shard of 0 records.
  """
  name = os.path.basename(path)
  if tf.io.gfile.isdir(path):
    return "is a directory"
  if re.search(r"\.tmp-\d+$", name):
    return "is the temporary file of a conversion that is running or was interrupted"
  with tf.io.gfile.GFile(path, "rb") as f:
    head = f.read(12)
  if not head:
    return None if path in vouched_empty else "is empty (0 bytes)"
  if len(head) == 12 and masked_crc32c(head[:8]) == int.from_bytes(head[8:], "little"):
    return None
  why = "does not start with a TFRecord header (record length + its masked CRC-32C)"
  if name.endswith("-manifest.json"):
    why += (": it is the manifest of an older tfdet converter; rerun data_prep.coco_to_tfrecord "
            "with the same arguments (it renames it manifest-<prefix>.json) or delete it")
  elif head[:1] in (b"{", b"["):
    why += ": it is a json file (a manifest or label map?)"
  return why


def _read_manifest(path):
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      manifest = json.load(f)
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"{path}: unreadable converter manifest ({e})") from None
  if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", {}), dict):
    raise ValueError(f"{path}: not a converter manifest (need a json object with 'shards')")
  return manifest


def _check_manifests(files, file_pattern):
  """Refuses matched shards of an unfinished, changed or superseded conversion.

  For each folder of a matched file, each converter manifest there
  (``manifest-<prefix>.json`` with ``expected_shards``, where the pattern
  matches files ``<prefix>-*``) whose shards the pattern matches must list all its expected shards as finished, with the sizes on
  disk; a matched ``{prefix}-NNNNN-of-NNNNN.tfrecord`` it does not expect
  (left from an earlier conversion) is refused too.

  Returns:
    The set of matched paths the manifests list as finished with 0 records.
  """
  by_dir = {}
  for path in files:
    by_dir.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
  vouched_empty = set()
  for directory, names in by_dir.items():
    for manifest_name in sorted(tf.io.gfile.listdir(directory or ".")):
      prefix = manifest_name[len(MANIFEST_PREFIX):-len(".json")]
      if not (manifest_name.startswith(MANIFEST_PREFIX) and manifest_name.endswith(".json")
              and any(n.startswith(prefix + "-") for n in names)):
        continue  # not a manifest, or not of these shards
      manifest_path = os.path.join(directory, manifest_name)
      manifest = _read_manifest(manifest_path)
      expected = manifest.get("expected_shards")
      if not isinstance(expected, list):
        continue
      stray = sorted(n for n in names if n not in expected and re.fullmatch(
          re.escape(prefix) + r"-\d{5}-of-\d{5}\.tfrecord", n))
      if stray:
        raise ValueError(
            f"{file_pattern!r} matches {', '.join(stray[:4])} in {directory}, which "
            f"{manifest_name} does not list among its {len(expected)} shards: left over from an "
            "earlier conversion? Delete it or narrow the pattern")
      matched = sorted(names & set(expected))
      if not matched:
        continue
      done = manifest.get("shards", {})
      missing = [n for n in expected if n not in done]
      if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ValueError(
            f"{file_pattern!r} matches shards of an unfinished conversion: {manifest_path} lists "
            f"{len(expected) - len(missing)} of {len(expected)} shards as written; missing: "
            f"{', '.join(missing[:8])}{more}. Rerun data_prep.coco_to_tfrecord with the same "
            "arguments to finish it (its log says why it stopped)")
      for name in matched:
        path = os.path.join(directory, name)
        size = tf.io.gfile.stat(path).length
        if done[name].get("bytes") not in (None, size):
          raise ValueError(
              f"{path}: {size} bytes, but {manifest_path} recorded {done[name]['bytes']}: the "
              "shard changed after the conversion; rerun data_prep.coco_to_tfrecord")
        if done[name].get("records") == 0:
          vouched_empty.add(path)
  return vouched_empty


def list_files(file_pattern):
  """Sorted TFRecord shards matching a glob pattern or a sequence of patterns, checked.

  Raises:
    ValueError: nothing matches; a matched file is not a TFRecord shard (a
      directory, an empty file, a json side file, a temporary file: each
      named, checked by the first record header); or a converter manifest
      beside the shards says their conversion is unfinished (the missing
      shards named) or a shard changed since (`_check_manifests`).
  """
  patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise ValueError(f"no files match {file_pattern!r}")
  vouched_empty = _check_manifests(files, file_pattern)
  problems = [f"{path} {why}" for path in files
              if (why := _not_a_shard(path, vouched_empty))]
  if problems:
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise ValueError(f"{file_pattern!r} matches {len(problems)} file(s) that are not TFRecord "
                     "shards (narrow the pattern to the shards, e.g. '<prefix>-*'):\n  "
                     + "\n  ".join(problems[:10]) + more)
  return files
