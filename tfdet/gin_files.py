"""Finding and parsing tfdet's gin files (entry points only; library code
takes plain arguments).

Shipped configs live in ``gin_configs/`` at the top of the source tree, and
an installed wheel carries them as the package data ``tfdet/gin_configs/``
(setup.py maps the one onto the other). `CONFIG_DIR` is whichever exists:
the installed copy first, else the source tree's (a checkout, or an editable
install, which imports tfdet from the checkout). ``include`` lines inside
the configs are relative to that folder, which is added to gin's search path
together with the folders of the files given.
"""

import contextlib
import importlib.resources
import inspect
import logging
import os
import pathlib

import gin

PACKAGE_DIR_NAME = "gin_configs"


def find_config_dir():
  """The folder of the shipped .gin files: ``tfdet/gin_configs`` if installed, else the tree's.

  The source tree's folder is returned even when missing (a broken install):
  `parse` then names it in its FileNotFoundError.
  """
  installed = pathlib.Path(str(importlib.resources.files("tfdet") / PACKAGE_DIR_NAME))
  if installed.is_dir():
    return installed
  return pathlib.Path(__file__).resolve().parent.parent / PACKAGE_DIR_NAME


CONFIG_DIR = find_config_dir()


@contextlib.contextmanager
def _quiet_resource_lookups():
  # gin first tries each include as a Python-package resource and logs an
  # error when that fails, before it finds the file on the search path.
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    root.setLevel(level)


def parse(gin_files, bindings=(), *, finalize=True):
  """Parses gin files and bindings, with gin's own errors on bad input.

  Args:
    gin_files: paths of .gin files (absolute, relative to the working
      directory, or relative to gin_configs/).
    bindings: "scope/name.param = value" strings, applied after the files.
    finalize: lock the configuration afterwards.

  Raises:
    FileNotFoundError: a gin file does not exist (the message names it).
    ValueError / NameError / ...: gin's errors, naming the binding.
  """
  resolved = []
  for f in gin_files:
    path = pathlib.Path(f)
    if not path.exists() and (CONFIG_DIR / path).exists():
      path = CONFIG_DIR / path
    if not path.exists():
      raise FileNotFoundError(f"gin file not found: {f} (also looked in {CONFIG_DIR})")
    resolved.append(str(path))
    gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
  gin.add_config_file_search_path(str(CONFIG_DIR))
  with _quiet_resource_lookups():
    gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=finalize)


def shipped_gin_files():
  """Every .gin file under gin_configs/, sorted."""
  return sorted(str(p) for p in CONFIG_DIR.rglob("*.gin"))


def configurable(fn):
  """gin's configurable of `fn`, or `fn` itself when no parsed file registered it.

  The shipped configs use dynamic registration: a function is known to gin only
  once a file imports its module and binds it. One that is not registered has no
  bindings, so calling it plainly is what gin would do.
  """
  try:
    return gin.get_configurable(fn)
  except ValueError:
    return fn


def bindings(fn, *, scope=None):
  """The parameters gin binds for `fn` (in `scope`): {} when it is not registered."""
  try:
    with gin.config_scope(scope):
      return gin.get_bindings(fn)
  except ValueError:  # not registered: nothing is bound
    return {}


def detector_spec():
  """The `DetectorSpec` the parsed configs name (``spec.DetectorSpec`` in models/*.gin).

  Raises:
    ValueError: no parsed config binds one, naming what to bind.
  """
  from tfdet.modeling.detectors import spec  # the model configs import it anyway

  hint = ("bind spec.DetectorSpec.build and spec.DetectorSpec.loss (every "
          "gin_configs/models/*.gin does: include one of them)")
  try:
    make = gin.get_configurable(spec.DetectorSpec)
  except ValueError:
    raise ValueError(f"the gin configs name no detector: {hint}") from None
  try:
    return make()
  except TypeError:  # registered by an earlier parse, but nothing bound now
    raise ValueError(f"the gin configs name no detector: {hint}") from None


def eval_preprocessing(**overrides):
  """{scale, max_size, size_divisibility} of the ``eval/pipeline.build_dataset`` bindings.

  What the eval split is resized to (TEST.SCALE: the last of ``scales``,
  TEST.MAX_SIZE) and padded to (the canvas multiple: 32 for FPN R-CNN, 128
  for RetinaNet, as the model config binds SIZE_DIVISIBILITY) is also what
  export and infer use; the pipeline's defaults when nothing is bound.

  Args:
    **overrides: scale, max_size, size_divisibility values that replace the
      bound ones unless None (the entry points' flags).
  """
  from tfdet.data import pipeline  # the entry points import it anyway

  defaults = inspect.signature(pipeline.build_dataset).parameters
  bound = bindings(pipeline.build_dataset, scope="eval")

  def get(name):
    return bound.get(name, defaults[name].default)

  result = {"scale": int(get("scales")[-1]), "max_size": int(get("max_size")),
            "size_divisibility": int(get("size_divisibility"))}
  unknown = set(overrides) - set(result)
  if unknown:
    raise ValueError(f"eval_preprocessing has no {sorted(unknown)}")
  result.update({k: int(v) for k, v in overrides.items() if v is not None})
  return result
