"""Reading and checking the image files of a conversion, and digests of them for the manifest.

Corrupt JPEGs: TensorFlow decodes JPEGs with its bundled libjpeg-turbo
(``tensorflow/core/lib/jpeg/jpeg_mem.cc``). Fatal libjpeg errors become a
`tf.errors.InvalidArgumentError`, but libjpeg *warnings* (``Corrupt JPEG
data: premature end of data segment``, ``bad Huffman code``, ...: damaged
entropy-coded data, which libjpeg decodes into garbage pixels) only go
through libjpeg's default ``output_message``, which prints them on the C
``stderr`` (fd 2); TensorFlow neither reports nor exposes them (its
warning count is not returned by the op). `decode_checked` therefore sends
fd 2 to a temporary file for the duration of the decode, looks for
libjpeg's warning texts (`LIBJPEG_WARNINGS`, from libjpeg's ``jerror.h``)
in what was written, and writes everything else back to the real stderr.
"""

import hashlib
import os
import re
import sys
import tempfile
import threading

import tensorflow as tf

from data_prep import coco_annotations as anns

# The texts of libjpeg(-turbo)'s warnings (the JWRN_* messages of jerror.h).
LIBJPEG_WARNINGS = re.compile(
    r"Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters for sequential JPEG|"
    r"Inconsistent progression sequence|Application transferred too many scanlines|"
    r"Warning: unknown JFIF revision|Unknown Adobe color transform")

_STDERR_LOCK = threading.Lock()


def _decode(data):
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def decode_checked(data):
  """Fully decodes JPEG or PNG bytes and collects the decoder's warnings.

  Args:
    data: the encoded bytes.

  Returns:
    (image shape (height, width, 3), list of the warning lines libjpeg
    printed; empty for a clean image).

  Raises:
    tf.errors.InvalidArgumentError, tf.errors.DataLossError: undecodable data.
  """
  with _STDERR_LOCK:
    sys.stderr.flush()
    try:
      saved = os.dup(2)
    except OSError:  # no fd 2 to capture: decode unchecked
      return tuple(_decode(data).shape), []
    with tempfile.TemporaryFile() as captured:
      os.dup2(captured.fileno(), 2)
      try:
        shape = tuple(_decode(data).shape)  # eager: libjpeg has printed by now
      finally:
        os.dup2(saved, 2)
        os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
  warnings, others = [], []
  for line in text.splitlines(keepends=True):
    (warnings if LIBJPEG_WARNINGS.search(line) else others).append(line)
  if others:  # not ours (TensorFlow's own log lines): pass them on
    os.write(2, "".join(others).encode())
  return shape, [w.strip() for w in warnings]


def read_image(path, image, *, verify=True):
  """Reads an image file and checks it.

  Args:
    path: the file.
    image: its ImageEntry (id and expected size).
    verify: decode it fully (`decode_checked`) and compare its size with the
      json's; a libjpeg warning counts as corruption.

  Returns:
    (encoded bytes, "jpeg" or "png").

  Raises:
    BadInputError: missing file, unknown format, corrupt data (a decoder
      error or warning) or wrong size; the message names the file and the
      image id.
  """
  if not os.path.isfile(path):
    raise anns.BadInputError(f"{path}: image file is missing (image id {image.image_id})")
  with open(path, "rb") as f:
    data = f.read()
  if data[:3] == b"\xff\xd8\xff":
    image_format = "jpeg"
  elif data[:8] == b"\x89PNG\r\n\x1a\n":
    image_format = "png"
  else:
    raise anns.BadInputError(f"{path}: not a JPEG or PNG file (image id {image.image_id})")
  if verify:
    try:
      shape, warnings = decode_checked(data)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
      raise anns.BadInputError(f"{path}: corrupt image (image id {image.image_id}): "
                               f"{e.message.splitlines()[0]}") from e
    if warnings:
      raise anns.BadInputError(f"{path}: corrupt image (image id {image.image_id}): the JPEG "
                               f"decoder warned {'; '.join(warnings)!r}")
    if (shape[0], shape[1]) != (image.height, image.width):
      raise anns.BadInputError(
          f"{path}: image is {shape[0]}x{shape[1]} but the json says "
          f"{image.height}x{image.width} (image id {image.image_id})")
  return data, image_format


def files_digest(image_dir, images):
  """A sha256 over the file name, size and modification time (ns) of each image.

  This is what the manifest compares to tell whether a shard's image files
  changed: an edit that keeps both the size and the modification time is
  not noticed (reading every image's content on each rerun would cost as
  much as converting it).

  Args:
    image_dir: the image folder.
    images: ImageEntry list (one shard's).
  """
  h = hashlib.sha256()
  for image in images:
    try:
      st = os.stat(anns.image_path(image_dir, image))
      state = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
      state = "missing"
    h.update(f"{image.file_name}\0{state}\0".encode())
  return h.hexdigest()


def content_sha256(path):
  """The sha256 of a file's content, or None when it cannot be read (missing)."""
  try:
    with open(path, "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()
  except OSError:
    return None
