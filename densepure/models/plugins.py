"""Your own models and data, named ``module:function`` in a config or on the command line.

The registries they extend resolve them: classifiers in
:func:`densepure.models.classifiers.get_classifier_spec`, diffusion models in
:func:`densepure.models.diffusion.load_diffusion`, datasets in :func:`densepure.models.datasets.load_dataset`. This
module only imports the named object.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(ValueError):
    """A ``module:function`` that is malformed or cannot be imported; the message is one line naming it."""


def is_target(spec: str) -> bool:
    """Whether ``spec`` has the form ``package.module:function`` (the function may be a dotted attribute path)."""
    return bool(_TARGET.match(spec))


def import_object(spec: str, what: str) -> Any:
    """The object ``module:attribute`` names, e.g. ``mypackage.nets:make_classifier``; ``what`` names its role in
    the error message (``classifier``, ``diffusion model``, ``dataset loader``)."""
    if not is_target(spec):
        raise PluginError(f"{what} {spec!r}: expected an importable 'package.module:function'")
    module_name, attribute = spec.split(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way while it is imported
        raise PluginError(f"{what} {spec!r}: cannot import {module_name} ({type(err).__name__}: {err}); is it on "
                          "PYTHONPATH or installed?") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {spec!r}: {module_name} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{what} {spec!r}: {attribute} is not callable")
    return obj
