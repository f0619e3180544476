"""infer's bad inputs and failed runs: unreadable images, same-name inputs, empty folders, and
output folders of an earlier run, with a tiny Mask R-CNN (in process, and on the command line
where exit status and messages are the behaviour)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tfdet import infer, visualization
from tfdet.export import serving

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_AN_IMAGE = b"this is a text file, not an image\n"


def _image(path, height, width, seed):
  """Writes a smooth random [height, width, 3] image (PNG or JPEG by suffix); returns its path."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
  image = tf.image.resize(coarse[None], [height, width])[0]
  visualization.encode_image(tf.cast(image, tf.uint8).numpy(), str(path))
  return str(path)


def _bad(path):
  path.write_bytes(NOT_AN_IMAGE)
  return str(path)


def _snapshot(folder):
  """{file name: bytes} of a folder."""
  return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def _partial_folders(parent):
  return [n for n in os.listdir(parent) if infer.PARTIAL_SUFFIX in n]


@pytest.fixture(scope="module")
def detect():
  tf.keras.utils.set_random_seed(0)
  module = serving.DetectionModule(tiny.tiny_model(), scale=96, max_size=160)
  detect = module.serve_bytes
  yield detect  # serve_bytes holds `module` alive


def _infer(detect, paths, output_dir, **kwargs):
  return infer.infer_images(detect, paths, str(output_dir), score_threshold=0.0,
                            convention="detectron", **kwargs)


def test_stop_on_the_third_image_leaves_the_previous_run_as_it_was(detect, tmp_path):
  out = tmp_path / "out"
  previous = _infer(detect, [_image(tmp_path / "old.jpg", 64, 80, 0),
                             _image(tmp_path / "old2.png", 48, 64, 1)], out)
  assert previous.results and not previous.failures
  before = _snapshot(out)
  assert set(before) == {"old.jpg", "old2.png", infer.RESULTS_FILE}
  bad = _bad(tmp_path / "third.jpg")
  paths = [_image(tmp_path / "new.jpg", 64, 80, 2), _image(tmp_path / "new2.jpg", 56, 72, 3),
           bad, _image(tmp_path / "new4.jpg", 64, 80, 4)]
  with pytest.raises(infer.ImageReadError, match="cannot read image .*third.jpg") as error:
    _infer(detect, paths, out, on_error="stop")
  assert error.value.path == bad
  # No new image beside the old results.json, nothing of the old run lost, no partial folder.
  assert _snapshot(out) == before
  assert not _partial_folders(tmp_path)


def test_skip_writes_the_good_images_and_lists_the_bad_one(detect, tmp_path):
  out = tmp_path / "out"
  bad = _bad(tmp_path / "broken.png")
  paths = [_image(tmp_path / "a.jpg", 64, 80, 0), bad, _image(tmp_path / "c.png", 48, 64, 1)]
  run = _infer(detect, paths, out)  # on_error="skip" is the default
  assert [p for p, _ in run.failures] == [bad]
  assert "format" in run.failures[0][1]  # TF's reason: not JPEG/PNG
  assert run.written == [(paths[0], "a.jpg"), (paths[2], "c.png")]
  assert sorted(os.listdir(out)) == ["a.jpg", "c.png", infer.ERRORS_FILE, infer.RESULTS_FILE]
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # a folder as makedirs makes it
  with open(out / infer.ERRORS_FILE) as f:
    assert json.load(f) == [{"path": bad, "error": run.failures[0][1]}]
  with open(out / infer.RESULTS_FILE) as f:
    results = json.load(f)
  assert results == run.results and results
  # image_id stays the input's index; the bad image (index 1) has none.
  assert {r["image_id"] for r in results} == {0, 2}
  assert {(r["image_id"], r["file_name"], r["path"]) for r in results} == {
      (0, "a.jpg", paths[0]), (2, "c.png", paths[2])}
  drawn = tf.io.decode_image(tf.io.read_file(str(out / "c.png")))
  assert drawn.shape == (48, 64, 3)
  # A later clean run into the same folder: its results, and no stale errors.json.
  again = _infer(detect, [paths[0]], out)
  assert not again.failures
  assert sorted(os.listdir(out)) == ["a.jpg", "c.png", infer.RESULTS_FILE]
  with open(out / infer.RESULTS_FILE) as f:
    assert {r["image_id"] for r in json.load(f)} == {0}
  assert not _partial_folders(tmp_path)


def test_a_run_where_no_image_can_be_read_writes_nothing(detect, tmp_path):
  bad = [_bad(tmp_path / "x.jpg"), _bad(tmp_path / "y.png")]
  with pytest.raises(infer.NoImagesReadError, match="none of the 2 images.*x.jpg.*y.png"):
    _infer(detect, bad, tmp_path / "out")
  assert not os.path.exists(tmp_path / "out")
  assert not _partial_folders(tmp_path)


def test_an_interrupted_run_keeps_the_previous_run(detect, tmp_path):
  out = tmp_path / "out"
  _infer(detect, [_image(tmp_path / "old.jpg", 64, 80, 0)], out)
  before = _snapshot(out)
  calls = []

  def interrupted(encoded):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt  # Ctrl-C while the second image runs
    return detect(encoded)

  paths = [_image(tmp_path / f"new{i}.jpg", 64, 80, i) for i in range(3)]
  with pytest.raises(KeyboardInterrupt):
    _infer(interrupted, paths, out)
  assert _snapshot(out) == before
  assert not _partial_folders(tmp_path)


def test_inputs_with_the_same_file_name_are_kept_apart(detect, tmp_path):
  (tmp_path / "day1").mkdir()
  (tmp_path / "day2").mkdir()
  first = _image(tmp_path / "day1" / "img.jpg", 64, 80, 0)
  second = _image(tmp_path / "day2" / "img.jpg", 48, 96, 1)
  paths = infer.list_images([str(tmp_path / "day1"), str(tmp_path / "day2")])
  assert paths == [first, second]
  run = _infer(detect, paths, tmp_path / "out")
  assert run.written == [(first, "img.jpg"), (second, "img-2.jpg")]
  # Each drawn image is its own input's (the sizes tell them apart).
  for name, shape in (("img.jpg", (64, 80, 3)), ("img-2.jpg", (48, 96, 3))):
    assert tf.io.decode_image(tf.io.read_file(str(tmp_path / "out" / name))).shape == shape
  with open(tmp_path / "out" / infer.RESULTS_FILE) as f:
    results = json.load(f)
  assert {(r["image_id"], r["file_name"], r["path"]) for r in results} == {
      (0, "img.jpg", first), (1, "img-2.jpg", second)}


def test_output_stems_are_unique_ignoring_case_and_never_take_an_inputs_own(tmp_path):
  paths = ["a/x.jpg", "b/x.jpg", "c/X.png", "x-2.jpg", "y.jpeg", "y.jpg"]
  assert infer.output_stems(paths) == ["x", "x-3", "X-4", "x-2", "y", "y-2"]
  # .jpeg and .jpg inputs of one stem would both be drawn as y.jpg: kept apart too.
  assert infer.plan_outputs(paths, str(tmp_path / "o"))[4:] == ["y.jpg", "y-2.jpg"]


def test_an_output_over_an_input_is_refused_before_anything_runs(detect, tmp_path):
  images = tmp_path / "photos"
  images.mkdir()
  _image(images / "a.jpg", 64, 80, 0)
  before = _snapshot(images)
  with pytest.raises(ValueError, match=r"writing a.jpg would overwrite the input image"):
    _infer(detect, infer.list_images([str(images)]), images)
  assert _snapshot(images) == before
  with pytest.raises(ValueError, match="exists and is not a folder"):
    _infer(detect, [str(images / "a.jpg")], images / "a.jpg")


def test_list_images_says_what_is_missing(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no images here")
  with pytest.raises(ValueError, match=f"no images found in folder {tmp_path / 'empty'}"):
    infer.list_images([str(tmp_path / "empty")])
  with pytest.raises(ValueError, match=f"input {tmp_path / 'gone.jpg'} does not exist"):
    infer.list_images([str(tmp_path / "gone.jpg")])
  with pytest.raises(ValueError, match="on_error must be one of"):
    _infer(None, [str(tmp_path / "gone.jpg")], tmp_path / "out", on_error="ignore")


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """(gin file, model_dir) of the tiny model's checkpoint."""
  tmp = tmp_path_factory.mktemp("infer_cli")
  tf.keras.utils.set_random_seed(0)
  ckpt = tf.train.Checkpoint(model=tiny.tiny_model(), step=tf.Variable(1, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(tmp / "model"), max_to_keep=1).save()
  (tmp / "tiny.gin").write_text(tiny.tiny_gin())
  return str(tmp / "tiny.gin"), str(tmp / "model")


def _cli(checkpoint, *args):
  gin_file, model_dir = checkpoint
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, "-m", "tfdet.infer", f"--gin_file={gin_file}", f"--model_dir={model_dir}",
       "--scale=96", "--max_size=160", "--score_threshold=0.0", *args],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)


def test_command_line_on_an_empty_folder_says_no_images_were_found(checkpoint, tmp_path):
  (tmp_path / "empty").mkdir()
  proc = _cli(checkpoint, f"--input={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode != 0
  assert f"--input: no images found in folder {tmp_path / 'empty'}" in proc.stderr
  assert not os.path.exists(tmp_path / "out")  # no silent []


def test_command_line_skips_or_stops_at_an_unreadable_image(checkpoint, tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  _image(images / "a.jpg", 64, 80, 0)
  bad = _bad(images / "b.jpg")
  _image(images / "c.png", 48, 64, 1)
  out = tmp_path / "out"
  # Default --on_error=skip: the good images are written, the bad one is named, status 1.
  proc = _cli(checkpoint, f"--input={images}", f"--output_dir={out}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "1 of 3 images could not be read" in proc.stderr and bad in proc.stderr
  assert sorted(os.listdir(out)) == ["a.jpg", "c.png", infer.ERRORS_FILE, infer.RESULTS_FILE]
  before = _snapshot(out)
  # --on_error=stop into that folder: it names the file, writes nothing, the earlier run stays.
  _image(images / "d.jpg", 64, 80, 2)
  proc = _cli(checkpoint, f"--input={images}", f"--output_dir={out}", "--on_error=stop")
  assert proc.returncode == 1
  assert f"cannot read image {bad}" in proc.stderr and "nothing was written" in proc.stderr
  assert _snapshot(out) == before
  assert not _partial_folders(tmp_path)
