"""Reading weights files: torch pickles (possibly nested, or a pickled whole model read with a restricted
unpickler), safetensors and Hugging Face folders; fitting a state dict to a model, with the timm and HF ViT
conversions."""

from __future__ import annotations

import functools
import pickle
import re
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A weights file that cannot be used (missing, unreadable, or not fitting the model); one line naming it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class _StandIn:
    """Inert replacement for a class found in a pickle (modules, numpy scalars, ...): it only keeps its state."""

    dump_patches = False  # read by torch's legacy loader for pickled nn.Module sources
    _origin = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_standin_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_standin_state"] = state

    def __call__(self, *args, **kwargs):
        return None

    def __repr__(self):
        return f"<stand-in for {self._origin}>"


@functools.lru_cache(maxsize=None)
def _standin_class(module: str, name: str) -> type:
    attributes = {"_origin": f"{module}.{name}", "__module__": "densepure.models.checkpoints._standins"}
    return type(name, (_StandIn,), attributes)


_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "bool", "str", "bytes",
                  "bytearray", "complex", "slice", "object", "range"}


class _StandInUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding functions, containers, dtypes and storages; everything else is a stand-in."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "copyreg" and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return getattr(torch._utils, name)
        if module == "torch.serialization" and name == "_get_layout":
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            if isinstance(obj, (torch.dtype, torch.layout)) or obj in (torch.Size, torch.device):
                return obj
            if isinstance(obj, type) and name.endswith("Storage"):
                return obj
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
            return super().find_class(module, name)
        return _standin_class(module, name)


def _standin_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickler replaces every class by an inert stand-in."""
    module = types.ModuleType("densepure_standin_pickle")
    module.Unpickler = _StandInUnpickler
    module.load = lambda f, **kw: _StandInUnpickler(f, **kw).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


_STANDIN_PICKLE = _standin_pickle_module()


def _standin_state_dict(obj: _StandIn, prefix: str = "", out: dict | None = None) -> dict[str, Tensor]:
    out = {} if out is None else out
    state = obj.__dict__
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for key, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + key] = value.detach() if isinstance(value, Tensor) else value
    for key, value in (state.get("_buffers") or {}).items():
        if value is not None and key not in non_persistent:
            out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if isinstance(child, _StandIn):
            _standin_state_dict(child, f"{prefix}{key}.", out)
    return out


_NESTING_KEYS = ("state_dict", "model", "net", "module")


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(8):
        if isinstance(obj, nn.Module):
            return dict(obj.state_dict())
        if isinstance(obj, _StandIn):
            if "_parameters" not in obj.__dict__:
                raise CheckpointError(f"{path}: pickled object {obj!r} is not a torch module")
            return _standin_state_dict(obj)
        if isinstance(obj, Mapping):
            nested = next((k for k in _NESTING_KEYS if k in obj and not isinstance(obj[k], Tensor)), None)
            if nested is not None:
                obj = obj[nested]
                continue
            if obj and all(isinstance(v, Tensor) for v in obj.values()):
                return {str(k): v for k, v in obj.items()}
            keys = ", ".join(map(str, list(obj)[:8]))
            raise CheckpointError(f"{path}: no state dict found (top-level keys: {keys})")
        break
    raise CheckpointError(f"{path}: no state dict found (got {type(obj).__name__})")


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def checkpoint_file(path: str | Path) -> Path:
    """The file a classifier checkpoint ``path`` names: itself, or a Hugging Face model folder's
    ``model.safetensors`` (else ``pytorch_model.bin``); CheckpointError when there is none."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (nor a model folder with "
                              "model.safetensors or pytorch_model.bin)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return path


def load_checkpoint_file(path: str | Path) -> dict[str, Tensor]:
    """Read a local checkpoint into a flat ``{key: tensor}`` state dict on CPU.

    Accepts a Hugging Face model folder (``model.safetensors`` or ``pytorch_model.bin``), ``.safetensors``, or a
    torch pickle. Pickles are first read with ``weights_only=True``; if that refuses (a pickled whole model such
    as meliketoy's ``.t7``), they are read again with a restricted unpickler that turns every class except
    tensors/containers into an inert stand-in, and the state dict is read off the stand-in module tree. State
    dicts nested under ``state_dict`` / ``model`` / ``net`` / ``module`` and a ``module.`` prefix are unwrapped.
    """
    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefix(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # source-change warnings of pickled modules
                obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_STANDIN_PICKLE)
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    return _strip_prefix(_extract_state_dict(obj, path))


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str | Path = "state dict") -> None:
    """Strict ``load_state_dict`` with a one-line :class:`CheckpointError` naming the first bad keys and ``source``.

    Missing BatchNorm ``num_batches_tracked`` counters (old checkpoints) are tolerated.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = expected[key].detach().clone()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: state dict does not fit the model: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(state_dict[key].shape)}, "
                f"model {tuple(value.shape)}"
            )
    model.load_state_dict(state_dict, strict=True)


_HF_VIT_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$")


_HF_VIT_LAYER_MAP = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",  # transformers < 5 names (what the hub checkpoints hold)
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.o_proj": "attn.proj",  # transformers >= 5 in-memory names
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


_HF_VIT_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}


_HF_VIT_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def convert_hf_vit_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face ``ViTForImageClassification`` keys -> timm ``VisionTransformer`` keys.

    query/key/value are concatenated into ``attn.qkv``; ``vit.pooler.*`` is dropped; keys that are already in
    timm form pass through; anything unrecognised is kept unchanged (so a strict load names it).
    """
    if not any(k.startswith(("vit.", "embeddings.", "encoder.", "layers.")) for k in state_dict):
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[int, Tensor]] = {}
    for key, value in state_dict.items():
        short = key[len("vit."):] if key.startswith("vit.") else key
        if short.startswith("pooler."):
            continue
        if short in _HF_VIT_TOP:
            out[_HF_VIT_TOP[short]] = value
            continue
        match = _HF_VIT_LAYER.match(short)
        if match is None:
            out[key] = value
            continue
        index, rest = int(match.group(1)), match.group(2)
        module, _, leaf = rest.rpartition(".")
        if module in _HF_VIT_QKV:
            qkv.setdefault((index, leaf), {})[_HF_VIT_QKV[module]] = value
        elif module in _HF_VIT_LAYER_MAP:
            out[f"blocks.{index}.{_HF_VIT_LAYER_MAP[module]}.{leaf}"] = value
        else:
            out[key] = value
    for (index, leaf), parts in sorted(qkv.items()):
        if set(parts) == {0, 1, 2}:
            out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
        else:  # incomplete: keep under a name that the strict load will report
            for i, value in parts.items():
                out[f"blocks.{index}.attn.{'qkv'[i]}.{leaf}"] = value
    return out


def _fits(state_dict: Mapping[str, Tensor], model: nn.Module) -> bool:
    expected = model.state_dict()
    return set(state_dict) == set(expected) and all(
        tuple(state_dict[k].shape) == tuple(v.shape) for k, v in expected.items()
    )


def _convert_timm(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm state dict as is; otherwise the model module's own ``checkpoint_filter_fn`` (e.g. BEiT's original
    ``.pth``: drops ``relative_position_index``, resizes position tables)."""
    if _fits(state_dict, model):
        return state_dict
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return dict(filter_fn(state_dict, model))
    except Exception:  # the strict load reports what does not fit
        return state_dict


def _convert_hf_vit(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    return _convert_timm(convert_hf_vit_state_dict(state_dict), model)


#: checkpoint format -> ``(state_dict, model) -> state_dict`` (after unnesting / unpickling).
CHECKPOINT_FORMATS: dict[str, Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]] = {
    "state_dict": lambda sd, model: sd,
    "timm": _convert_timm,
    "hf_vit": _convert_hf_vit,
    "wrn_pickle": lambda sd, model: sd,  # the pickled whole model is turned into a state dict while loading
}


def checkpoint_digests(diffusion_ckpt: str | Path, classifier_ckpt: str | Path | None) -> dict:
    """sha256 of the weights files a certification job loads (None where there is none: random weights, or your
    own network that loads its weights itself): part of the votes' setting. Call after the models loaded (they
    report a missing file)."""
    from densepure.models.download import sha256

    return {"diffusion": sha256(diffusion_ckpt) if diffusion_ckpt else None,
            "classifier": sha256(checkpoint_file(classifier_ckpt)) if classifier_ckpt else None}
