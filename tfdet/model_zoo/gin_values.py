"""The values a parsed gin configuration gives to tfdet's settings, defaults included.

A *selector* names one setting as gin does, ``[scope/]module.function.parameter``,
optionally followed by attributes of the value (``builders.build_rcnn.roi_settings.
fg_thresh``). `value` returns what the function will receive: the bound value, or
else the parameter's default. ``{model}`` in a selector stands for the builder the
configuration's `DetectorSpec` names (``builders.build_rcnn`` or
``builders.build_retinanet``), so that one selector serves every family.

Entry points and tests call this after `tfdet.gin_files.parse`; nothing here
parses files.
"""

import dataclasses
import inspect

import gin

from tfdet import gin_files


class UnresolvedSetting(LookupError):
  """A selector names a function gin does not know, or a parameter it does not take."""


def model_builder():
  """``module.function`` of the builder the parsed configuration's DetectorSpec binds."""
  build = inspect.unwrap(gin_files.detector_spec().build)
  return f"{build.__module__.rsplit('.', 1)[-1]}.{build.__name__}"


def _default(fn, parameter, selector):
  if dataclasses.is_dataclass(fn):
    for field in dataclasses.fields(fn):
      if field.name == parameter:
        if field.default is not dataclasses.MISSING:
          return field.default
        if field.default_factory is not dataclasses.MISSING:
          return field.default_factory()
        break
  else:
    param = inspect.signature(fn).parameters.get(parameter)
    if param is not None and param.default is not inspect.Parameter.empty:
      return param.default
  raise UnresolvedSetting(f"{selector}: {parameter} is neither bound nor defaulted")


def value(selector):
  """The value of ``[scope/]module.function.parameter[.attribute...]`` (``{model}`` allowed).

  Raises:
    UnresolvedSetting: naming the selector, when gin does not know the
      function, or the parameter is neither bound nor has a default, or an
      attribute is read off None (a settings object left to the builder).
  """
  if "{model}" in selector:
    selector = selector.format(model=model_builder())
  scope, _, name = selector.rpartition("/")
  module, function, parameter, *attributes = name.split(".")
  try:
    configurable = gin.get_configurable(f"{module}.{function}")
  except ValueError:
    raise UnresolvedSetting(f"{selector}: no parsed gin file registers "
                            f"{module}.{function}") from None
  with gin.config_scope(scope or None):
    bound = gin.get_bindings(f"{module}.{function}")
  fn = inspect.unwrap(configurable)
  result = bound[parameter] if parameter in bound else _default(fn, parameter, selector)
  for attribute in attributes:
    if result is None:
      raise UnresolvedSetting(f"{selector}: {parameter} is None (the builder's default); "
                              "bind it to read its attributes")
    result = getattr(result, attribute)
  return result
