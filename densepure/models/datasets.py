"""Datasets as the reference loads them, and the certified image ids.

Every dataset yields ``(x, label)`` with ``x`` a float32 tensor C x H x W in [0, 1] (torchvision ``ToTensor``).
* ``cifar10``: torchvision's CIFAR-10 test set from its python archive (``cifar-10-batches-py/``), 32 x 32.
* ``imagenet``: the validation set in class folders (``ImageFolder``, sorted), ``Resize(256, bicubic)`` +
  ``CenterCrop(256)``, as the DensePure reference does; id ``500 k`` is the first image of class ``10 k``.
* ``digits``: scikit-learn's 8 x 8 handwritten digits (shipped with the package), grey values / 16, one
  channel; ids ``0..1199`` train, ``1200..1796`` test (a fixed split, test id ``i`` is digit ``1200 + i``).

Your own data, under any name, by a *loader* (:func:`load_dataset`):
* ``image_folder``: ``root/<class>/<image>`` (torchvision ``ImageFolder``: classes and images sorted, RGB,
  ``ToTensor``), all images of one size; id ``i`` is the ``i``-th image in that order.
* ``module:function``: ``function(root, **kwargs)`` returns an indexable dataset, ``len()`` and
  ``[i] -> (image, label)`` with the image C x H x W in [0, 1], and its ``num_classes`` (or a ``classes`` list)
  as an attribute; ``kwargs`` are a config's ``kwargs:``.
* a name an installed package registers in the entry-point group ``densepure.datasets``: its
  ``module:function``, used as above, either as the ``loader`` or as the dataset's own name without a loader (a
  built-in name registered again is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # torch is imported where images are made, so the workflow's CPU rules start fast
    import torch

DIGITS_TRAIN = 1200
NUM_CLASSES = {"digits": 10, "cifar10": 10, "imagenet": 1000}
# Images in each dataset's certification split: the ids 0 .. size - 1 a config's image sets may hold.
SIZES = {"digits": 1797 - DIGITS_TRAIN, "cifar10": 10_000, "imagenet": 50_000}


class DataError(ValueError):
    """A dataset that is missing or malformed, or an id that is out of range; the message names the path."""


@dataclass
class Dataset:
    """Indexable images in [0, 1] with integer labels."""

    name: str
    num_classes: int
    length: int
    get: Callable[[int], tuple[torch.Tensor, int]]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        if not 0 <= idx < self.length:
            raise DataError(f"image id {idx} is out of range for {self.name} (0..{self.length - 1})")
        return self.get(idx)


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Digits images (n, 1, 8, 8) float32 in [0, 1] and labels (n,) for ``train`` or ``test``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    part = slice(0, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return images[part], digits.target[part].astype(np.int64)


def _digits() -> Dataset:
    import torch

    images, labels = digits_arrays("test")
    return Dataset("digits", 10, len(images), lambda i: (torch.from_numpy(images[i]), int(labels[i])))


def _cifar10(root: Path) -> Dataset:
    from torchvision.datasets import CIFAR10
    from torchvision.transforms import ToTensor

    if not (root / "cifar-10-batches-py" / "test_batch").is_file():
        raise DataError(f"CIFAR-10 test set not found: expected {root}/cifar-10-batches-py/test_batch "
                        "(the torchvision python archive, extracted)")
    try:
        data = CIFAR10(str(root), train=False, download=False, transform=ToTensor())
    except RuntimeError as err:
        raise DataError(f"CIFAR-10 archive under {root} is malformed: {err}") from None
    return Dataset("cifar10", 10, len(data), lambda i: data[i])


def _imagenet(root: Path) -> Dataset:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize, ToTensor

    if not root.is_dir():
        raise DataError(f"ImageNet validation folder not found: {root}")
    transform = Compose([Resize(256, interpolation=InterpolationMode.BICUBIC), CenterCrop(256), ToTensor()])
    try:
        data = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"ImageNet validation folder {root} is not in class-folder layout: {err}") from None
    if len(data.classes) != 1000:
        raise DataError(f"ImageNet validation folder {root} has {len(data.classes)} class folders, expected 1000")
    return Dataset("imagenet", 1000, len(data), lambda i: data[i])


DATASETS = {"digits": _digits, "cifar10": _cifar10, "imagenet": _imagenet}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def check_imagenet_folder(root: str | Path, ids: Iterable[int] = ()) -> int:
    """Check, without reading an image, that ``root`` is an ImageNet validation folder a job can certify ``ids``
    from: it exists, holds 1,000 class folders, and has an image at every id (ids index the images in
    ImageFolder's order). Returns the number of images; DataError in one line naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ImageNet validation folder not found: {root} (datasets.imagenet.root; 1,000 class folders "
                        "of the validation images, e.g. from the ILSVRC2012 validation archive)")
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if len(classes) != 1000:
        raise DataError(f"ImageNet validation folder {root} has {len(classes)} class folders, expected 1000")
    count = sum(1 for d in classes for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
    ids = list(ids)
    if ids and max(ids) >= count:
        raise DataError(f"ImageNet validation folder {root} holds {count} images; image id {max(ids)} of the "
                        f"configured panels does not exist (ids 0..{count - 1})")
    return count
IMAGE_FOLDER = "image_folder"


def _image_folder(name: str, root: Path | None) -> Dataset:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    if root is None or not root.is_dir():
        raise DataError(f"dataset {name}: image folder not found: {root}")
    try:
        data = ImageFolder(str(root), transform=ToTensor())
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"dataset {name}: {root} is not in class-folder layout: {err}") from None
    return Dataset(name, len(data.classes), len(data), lambda i: data[i])


def _loader_factory(loader: str) -> Callable:
    """The callable a ``module:function`` or a registered name (group ``densepure.datasets``) names."""
    from densepure.models.plugins import PluginError, import_object, is_target, load_registered

    try:
        factory = import_object(loader, "dataset loader") if is_target(loader) else load_registered("dataset", loader)
    except PluginError as err:
        raise DataError(str(err)) from None
    if factory is None:
        raise DataError(f"dataset loader {loader!r}: expected {IMAGE_FOLDER}, an importable 'package.module:function' "
                        "or a name an installed package registers (densepure.datasets)")
    return factory


def _loaded(name: str, loader: str, root: Path | None, kwargs: dict) -> Dataset:
    import torch

    factory = _loader_factory(loader)
    try:
        data = factory(None if root is None else str(root), **kwargs)
        num_classes = getattr(data, "num_classes", None) or len(getattr(data, "classes", []))
        length = len(data)
    except Exception as err:  # whatever the user's loader raises
        raise DataError(f"dataset {name}: {loader}({str(root)!r}) failed: {type(err).__name__}: {err}") from None
    if not num_classes:
        raise DataError(f"dataset {name}: what {loader} returns needs a num_classes (or classes) attribute")

    def get(i: int) -> tuple[torch.Tensor, int]:
        image, label = data[i]
        return torch.as_tensor(image, dtype=torch.float32), int(label)

    return Dataset(name, int(num_classes), length, get)


def is_registered(name: str) -> bool:
    """Whether an installed package registers dataset ``name`` (entry-point group ``densepure.datasets``); a
    built-in name registered again is a DataError."""
    from densepure.models.plugins import PluginError, refuse_builtin_name, registered_target

    try:
        if name in DATASETS:
            refuse_builtin_name("dataset", name)
            return False
        return registered_target("dataset", name) is not None
    except PluginError as err:
        raise DataError(str(err)) from None


def check_dataset(name: str) -> None:
    """DataError unless ``name`` is a built-in dataset or one an installed package registers (your own data
    otherwise needs a loader)."""
    if not is_registered(name) and name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)}; your own data needs a loader: "
                        f"{IMAGE_FOLDER} or module:function)")


def load_dataset(name: str, root: str | Path | None = None, loader: str | None = None,
                 kwargs: dict | None = None) -> Dataset:
    """The certification split of dataset ``name`` (``root`` is ignored for the embedded ``digits``); with a
    ``loader`` (``image_folder``, ``module:function`` or a registered name) your own data under that name, as
    without one for a name an installed package registers. ``kwargs`` go to your loader."""
    kwargs = dict(kwargs or {})
    if loader is None and name not in DATASETS and is_registered(name):
        loader = name
    if kwargs and loader in (None, IMAGE_FOLDER):
        raise DataError(f"dataset {name}: kwargs are for your own loader, not {loader or 'the built-in ' + name}")
    if loader == IMAGE_FOLDER:
        return _image_folder(name, None if root is None else Path(root))
    if loader is not None:
        return _loaded(name, loader, None if root is None else Path(root), kwargs)
    check_dataset(name)
    if name == "digits":
        return _digits()
    if root is None:
        raise DataError(f"dataset {name!r} needs a data root")
    return DATASETS[name](Path(root))


def parse_ids(spec: str, limit: int | None = None) -> list[int]:
    """Image ids from ``"start:stop:step"`` (Python range), a comma list ``"0,20,40"``, or ``@file`` (one per line).
    DataError when ``spec`` cannot be read, holds no id (``5:1``), or holds more than ``limit`` ids (the dataset's
    size, the ids stored: more must hold an id that is not there; a range is refused before it is listed)."""
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise DataError(f"id list file not found: {path}")
        spec = ",".join(line.strip() for line in path.read_text().splitlines() if line.strip())
    try:
        if ":" in spec:
            ids = range(*[int(part) for part in spec.split(":")])
        else:
            ids = [int(part) for part in spec.split(",") if part.strip()]
    except (ValueError, TypeError):
        raise DataError(f"cannot read image ids from {spec!r}: use start:stop:step, a comma list or @file") from None
    if limit is not None and len(ids) > limit:
        raise DataError(f"{spec!r} holds {len(ids)} ids; at most {limit} are possible here")
    ids = list(ids)
    if not ids:
        raise DataError(f"{spec!r} holds no image ids")
    return ids
