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
import dataclasses
import importlib.resources
import inspect
import logging
import os
import pathlib
import types
import typing

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


def tta_configured():
  """Whether the parsed configuration binds ``tta.TTAConfig`` (Detectron's TEST.BBOX_AUG.ENABLED).

  A model-zoo config that includes evaluation/detectron_tta.gin (Detectron's
  X-152 row) is evaluated with test-time augmentation unless told otherwise
  (``python -m tfdet.evaluate --notta``).
  """
  try:
    return bool(gin.get_bindings("tta.TTAConfig"))
  except ValueError:  # no parsed file imports tfdet.evaluation.tta
    return False


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


def _accepted_types(annotation, default):
  """(types, allows None) a parameter takes, from its annotation or else its default."""
  if annotation is not inspect.Parameter.empty and annotation is not dataclasses.MISSING:
    options = typing.get_args(annotation) if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else (
            annotation,)
    plain = tuple(t for t in options if t in _CHECKED)
    if plain:
      return plain, type(None) in options or default is None
  if default is not None and type(default) in _CHECKED:
    return (type(default),), False
  return None, True


_CHECKED = (bool, int, float, str, tuple)


def _fits(value, accepted, allows_none):
  if value is None:
    return allows_none
  if isinstance(value, bool):
    return bool in accepted
  if isinstance(value, int):
    return int in accepted or float in accepted
  if isinstance(value, float):
    return float in accepted
  if isinstance(value, (tuple, list)):
    return tuple in accepted
  if isinstance(value, str):
    return str in accepted
  return True  # references, settings objects, ...: not judged here


def check_types(*targets):
  """Checks the types of the values gin binds for functions or dataclasses, before any work.

  A parameter's type is its annotation when it has a plain one (bool, int,
  float, str, tuple, optionally None), else the type of its default (when
  that is one of those); ints pass for floats, lists for tuples. Parameters
  of other kinds are not judged.

  Args:
    *targets: functions or classes, or (function, scope) pairs.

  Raises:
    ValueError: naming the binding (scope/name.parameter), its value and the
      type the parameter takes.
  """
  for target in targets:
    fn, scope = target if isinstance(target, tuple) else (target, None)
    bound = bindings(fn, scope=scope)
    if not bound:
      continue
    plain = inspect.unwrap(fn)
    if dataclasses.is_dataclass(plain):
      hints = typing.get_type_hints(plain)
      params = {f.name: (hints.get(f.name, inspect.Parameter.empty), f.default)
                for f in dataclasses.fields(plain)}
    else:
      params = {p.name: (p.annotation, p.default)
                for p in inspect.signature(plain).parameters.values()}
    for name, value in bound.items():
      if name not in params:
        continue
      annotation, default = params[name]
      accepted, allows_none = _accepted_types(annotation, default)
      if accepted is None or _fits(value, accepted, allows_none):
        continue
      selector = f"{scope + '/' if scope else ''}{plain.__module__.split('.')[-1]}." \
                 f"{plain.__name__}.{name}"
      wanted = " or ".join(t.__name__ for t in accepted) + (" or None" if allows_none else "")
      default_text = "" if default in (inspect.Parameter.empty, dataclasses.MISSING) else \
          f" (default {default!r})"
      raise ValueError(f"gin binding {selector} = {value!r} ({type(value).__name__}): "
                       f"{name} takes {wanted}{default_text}")
