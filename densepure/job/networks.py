"""The networks as a job calls them: compiled or not, the classifier under autocast in its precision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from densepure.core.denoise import Denoiser
from densepure.job.execution import Execution

ClassifierFn = Callable[[torch.Tensor], torch.Tensor]  # images in [0, 1] -> logits


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Compiled:
    """``torch.compile`` of a module whose inputs' first dimension is marked dynamic: one graph for every batch
    size."""

    def __init__(self, module: torch.nn.Module, backend: str | Callable = "inductor"):
        self.module = module
        self.compiled = torch.compile(module, backend=backend)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for tensor in inputs:
            if isinstance(tensor, torch.Tensor) and tensor.dim():
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return self.compiled(*inputs)


class ClassifierCall:
    """``classifier(images)`` with its preprocessing (resize, normalisation: torch ops on the images' device) in
    float32 and its network under ``torch.autocast(dtype)`` when ``precision`` is not fp32, optionally compiled.
    A classifier without a ``preprocess`` attribute is run whole."""

    def __init__(self, classifier: ClassifierFn, precision: str = "fp32", compile: bool = False):
        self.preprocess = getattr(classifier, "preprocess", None)
        model = classifier.model if self.preprocess is not None else classifier
        self.model = Compiled(model) if compile else model
        self.dtype = None if precision == "fp32" else _DTYPES[precision]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.preprocess(images) if self.preprocess is not None else images
        if self.dtype is None:
            return self.model(inputs)
        with torch.autocast(inputs.device.type, dtype=self.dtype):
            return self.model(inputs).float()


def set_compile_cache(directory: str | Path | None) -> None:
    """Make torch.compile keep its compiled kernels and graphs in ``directory`` (reused by later runs)."""
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(directory).resolve())


def prepare_models(net: torch.nn.Module, classifier: ClassifierFn, execution: Execution
                   ) -> tuple[Denoiser, ClassifierFn]:
    """The denoiser and classifier callables of ``execution``: channels_last (with cuDNN autotuning), compiled,
    classifier precision. With the custom defaults (fp32 classifier, no channels_last, no compile) both are returned
    unchanged and cuDNN autotuning stays off (PyTorch's default)."""
    torch.backends.cudnn.benchmark = execution.channels_last or execution.compile
    if execution.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if execution.compile:
        set_compile_cache(execution.compile_cache)
    denoiser = Compiled(net) if execution.compile else net
    if execution.classifier_precision == "fp32" and not execution.compile:
        return denoiser, classifier
    return denoiser, ClassifierCall(classifier, execution.classifier_precision, execution.compile)
