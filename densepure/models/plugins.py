"""Your own models and data: a ``module:function`` reference, or a name an installed package registers.

A reference ``package.module:function`` is resolved by :func:`pkgutil.resolve_name` (the colon form only: a
dotted name without a colon is a registry name, never imported). An installed package registers names in the
entry-point groups of :data:`GROUPS` (``[project.entry-points."densepure.classifiers"]`` in its
``pyproject.toml``); each entry point is a ``module:function`` reference under that name, found with
:func:`importlib.metadata.entry_points`. A name that is also built in is refused in one line
(:func:`refuse_builtin_name`), so a config never means something else because of what happens to be installed.

The registries resolve them: classifiers in :func:`densepure.models.classifiers.get_classifier_spec`, diffusion
models in :func:`densepure.models.diffusion.load_diffusion`, datasets in :func:`densepure.models.datasets.load_dataset`.
This module only finds and imports the named object.
"""

from __future__ import annotations

import pkgutil
import re
from importlib.metadata import entry_points
from typing import Any

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

#: what each registry is called -> its entry-point group
GROUPS = {"classifier": "densepure.classifiers", "diffusion model": "densepure.diffusion_models",
          "dataset": "densepure.datasets"}


class PluginError(ValueError):
    """A ``module:function`` or registered name that is malformed or cannot be imported; one line naming it."""


def is_target(spec: str) -> bool:
    """Whether ``spec`` has the form ``package.module:function`` (the function may be a dotted attribute path)."""
    return isinstance(spec, str) and bool(_TARGET.match(spec))


def _missing_module(err: ModuleNotFoundError, module_name: str) -> bool:
    """Whether the import failed because ``module_name`` (or a package above it) does not exist, rather than
    because of something the module itself imports."""
    return err.name is not None and (module_name == err.name or module_name.startswith(err.name + "."))


def import_object(spec: str, what: str) -> Any:
    """The callable ``module:attribute`` names (:func:`pkgutil.resolve_name`), e.g.
    ``mypackage.nets:make_classifier``; ``what`` names its role in the error message (``classifier``,
    ``diffusion model``, ``dataset loader``). PluginError in one line naming ``spec``."""
    if not is_target(spec):
        raise PluginError(f"{what} {spec!r}: expected an importable 'package.module:function'")
    module_name, attribute = spec.split(":")
    try:
        obj = pkgutil.resolve_name(spec)
    except ModuleNotFoundError as err:
        if _missing_module(err, module_name):
            raise PluginError(f"{what} {spec!r}: cannot import {module_name} (no module named {err.name!r}); is it "
                              "on PYTHONPATH or installed?") from None
        raise PluginError(f"{what} {spec!r}: cannot import {module_name} ({type(err).__name__}: {err})") from None
    except AttributeError:
        raise PluginError(f"{what} {spec!r}: {module_name} has no attribute {attribute!r}") from None
    except Exception as err:  # the user's module may fail in any way while it is imported
        raise PluginError(f"{what} {spec!r}: cannot import {module_name} ({type(err).__name__}: {err})") from None
    if not callable(obj):
        raise PluginError(f"{what} {spec!r}: {attribute} is not callable")
    return obj


def registered(what: str) -> dict[str, str]:
    """Names installed packages register for ``what`` (a key of :data:`GROUPS`) -> their ``module:function``."""
    return {ep.name: ep.value for ep in entry_points(group=GROUPS[what])}


def registered_target(what: str, name: str) -> str | None:
    """The ``module:function`` an installed package registers under ``name`` for ``what``, or None. Two packages
    registering the same name: PluginError naming both references."""
    values = sorted({ep.value for ep in entry_points(group=GROUPS[what]) if ep.name == name})
    if len(values) > 1:
        raise PluginError(f"{what} {name!r} is registered twice ({' and '.join(values)}, entry-point group "
                          f"{GROUPS[what]}); uninstall one of the packages")
    return values[0] if values else None


def refuse_builtin_name(what: str, name: str) -> None:
    """PluginError when an installed package registers ``name``, which is built in for ``what``: the name would
    be ambiguous, so it is refused until the entry point is renamed (a config never means something else because
    of what happens to be installed)."""
    target = registered_target(what, name)
    if target is not None:
        raise PluginError(f"{what} {name!r} is built in, and an installed package registers it too ({target}, "
                          f"entry-point group {GROUPS[what]}); rename that entry point")


def load_registered(what: str, name: str) -> Any:
    """The callable an installed package registers under ``name`` (None when none does)."""
    target = registered_target(what, name)
    if target is None:
        return None
    if not is_target(target):
        raise PluginError(f"{what} {name!r}: its entry point ({GROUPS[what]}) is {target!r}, expected "
                          "'package.module:function'")
    return import_object(target, f"{what} {name!r} ({GROUPS[what]})")
