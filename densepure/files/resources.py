"""The project files the package reads at run time: the workflow's config schema, the configs, the lock file of
checkpoint digests and the paper's transcribed numbers. Every lookup of them goes through :func:`resource`.

They live once in the repository, where the workflow and Snakemake users expect them (``config/``,
``workflow/schemas/``, ``results/paper/``). A wheel carries them as package data under ``densepure/_resources/``
with the same relative paths (``[tool.setuptools.package-dir]`` in pyproject.toml maps those folders into the
package), so :func:`resource` finds the copy inside an installed wheel first (``importlib.resources``) and the
repository checkout's otherwise (a source tree or an editable install).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: Configs shipped with the package, by short name.
CONFIGS = {"default": "config/config.yaml", "paper": "config/paper.yaml"}
SCHEMA = "workflow/schemas/config.schema.yaml"
CHECKSUMS = "config/checksums.lock"
PAPER_NUMBERS = "results/paper"

_CHECKOUT = Path(__file__).resolve().parents[2]  # densepure/files/resources.py -> the repository


class ResourceError(ValueError):
    """A project file that is neither in the installed package nor in a checkout; the message names it."""


def resource(relpath: str) -> Path:
    """The project file (or folder) ``relpath`` (e.g. ``config/paper.yaml``): the installed package's copy, else
    the repository checkout's."""
    packaged = files("densepure").joinpath("_resources", *relpath.split("/"))
    if packaged.is_file() or packaged.is_dir():
        return Path(str(packaged))
    checkout = _CHECKOUT / relpath
    if checkout.exists():
        return checkout
    raise ResourceError(f"{relpath} is neither in the installed densepure package ({packaged}) nor in a checkout "
                        f"({checkout}); reinstall densepure")


def config_file(name: str | Path, what: str = "config file") -> Path:
    """A workflow config given on the command line: an existing file, else the packaged config it names (a short
    name of :data:`CONFIGS` or its repository path, so ``config/paper.yaml`` works outside a checkout too)."""
    path = Path(name)
    if path.is_file():
        return path
    relpath = CONFIGS.get(str(name), str(name))
    if relpath in CONFIGS.values():
        return resource(relpath)
    raise ResourceError(f"{what} not found: {name} (packaged configs: {', '.join(CONFIGS)})")


def paper_numbers(artifact: str) -> Path:
    """The paper's transcribed numbers of ``artifact`` (``results/paper/<artifact>.csv``)."""
    path = resource(PAPER_NUMBERS) / f"{artifact}.csv"
    if not path.is_file():
        raise ResourceError(f"the paper has no transcribed numbers for {artifact!r} ({path} not found)")
    return path
