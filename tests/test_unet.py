"""The ADM UNet against the reference: full-size key/shape/dtype manifests and tiny-UNet forward outputs.

Full-size models are built on the ``meta`` device (no memory is allocated), so checking the 553M-parameter
ImageNet network costs a fraction of a second.
"""

import inspect

import numpy as np
import pytest
import torch
from conftest import FIXTURES, load_json, load_npz

from densepure.models import unet as U

MANIFESTS = {"imagenet256": U.imagenet256_config, "cifar10": U.cifar10_config}
TINY_META = load_json("tiny_oracles_meta.json")
TINY_IMAGE_SIZE = 16  # x in tiny_*_unet_io.npz is (3, 3, 16, 16); improved-diffusion kwargs carry no image_size

# The fixtures are float32 CPU outputs of the reference; ours are float32 CPU too, but conv/matmul kernels and
# summation orders differ (thread count, channels-last kernels), so we see ~1e-6 relative L2 error. 1e-5 leaves
# headroom while still catching any real mismatch (a wrong head split, scale or skip order gives errors of O(1)).
FP32_REL_TOL = 1e-5
# Half-precision torsos round every activation: measured relative L2 error vs fp32 is ~2e-3 (fp16, 11-bit mantissa)
# and ~1.5e-2 (bf16, 8-bit mantissa) on the tiny UNets. Bounds are ~5x / ~3x that: loose sanity checks only.
HALF_REL_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ``||out - ref|| / ||ref||`` in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def meta_model(name: str) -> U.UNetModel:
    with torch.device("meta"):
        return U.UNetModel(MANIFESTS[name]())


def tiny_config(kind: str) -> U.UNetConfig:
    return U.config_from_fixture_meta(kind, TINY_META[f"{kind}_tiny"]["constructor"], image_size=TINY_IMAGE_SIZE)


def tiny_model(kind: str, **kwargs) -> U.UNetModel:
    return U.load_unet(FIXTURES / f"tiny_{kind}_unet_state_dict.pt", tiny_config(kind), **kwargs)


def tiny_io(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    io = load_npz(f"tiny_{kind}_unet_io.npz")
    return torch.from_numpy(io["x"]), torch.from_numpy(io["timesteps"]), torch.from_numpy(io["output"])


def tiny_state_dict(kind: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / f"tiny_{kind}_unet_state_dict.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------- full-size configs


@pytest.mark.parametrize("name", MANIFESTS)
def test_full_size_state_dict_matches_manifest(name):
    manifest = load_json(f"unet_keys_{name}.json")
    state = meta_model(name).state_dict()
    assert [e["key"] for e in manifest["keys"]] == list(state)  # same keys, same order
    for entry in manifest["keys"]:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["key"]
        assert tensor.numel() == entry["numel"], entry["key"]
    assert len(state) == manifest["num_state_dict_entries"]
    assert sum(t.numel() for t in state.values()) == manifest["total_parameters"]
    assert manifest["num_buffers"] == 0 and not list(meta_model(name).buffers())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_imagenet_torso_conversion_matches_reference_convert_to_fp16(dtype):
    """Exactly the entries the reference turns into float16 change dtype (bf16: the same entries, in bf16)."""
    manifest = load_json("unet_keys_imagenet256.json")
    state = meta_model("imagenet256").set_torso_dtype(dtype).state_dict()
    name = str(dtype).removeprefix("torch.")
    for entry in manifest["keys"]:
        expected = name if entry["dtype_after_convert_to_fp16"] == "float16" else entry["dtype_after_convert_to_fp16"]
        assert str(state[entry["key"]].dtype).removeprefix("torch.") == expected, entry["key"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_full_size_config_matches_manifest_derived_facts(name):
    derived = load_json(f"unet_keys_{name}.json")["derived"]
    model = meta_model(name)
    config = model.config
    assert list(config.channel_mult) == derived["channel_mult"]
    assert list(config.attention_resolutions) == derived["attention_resolutions_as_downsample_rates"]
    assert config.time_embed_dim == derived["time_embed_dim"]
    assert config.out_channels == derived["out_channels"]
    assert len(model.input_blocks) == derived["num_input_blocks"]
    assert len(model.output_blocks) == derived["num_output_blocks"]


def test_guided_kwargs_of_imagenet_manifest_give_imagenet256_config():
    """The reference create_model arguments (incl. empty channel_mult, pixel attention sizes) parse to our config."""
    used = load_json("unet_keys_imagenet256.json")["config_used"]
    accepted = inspect.signature(U.guided_config).parameters
    assert U.guided_config(**{k: v for k, v in used.items() if k in accepted}) == U.imagenet256_config()


def test_heads():
    imagenet, cifar = U.imagenet256_config(), U.cifar10_config()
    assert imagenet.heads_for(512) == 8 and imagenet.heads_for(1024, upsample=True) == 16  # 64 channels per head
    assert cifar.heads_for(256) == 4 and cifar.heads_for(256, upsample=True) == 4
    with pytest.raises(ValueError, match="num_head_channels"):
        imagenet.heads_for(96)


# ------------------------------------------------------------------------------------------------- tiny UNets


@pytest.mark.parametrize("kind", ["guided", "improved"])
def test_tiny_parameter_count(kind):
    model = tiny_model(kind)
    assert sum(p.numel() for p in model.parameters()) == TINY_META[f"{kind}_tiny"]["num_parameters"]


@pytest.mark.parametrize("attention", ["sdpa", "einsum"])
@pytest.mark.parametrize("kind", ["guided", "improved"])
def test_tiny_forward_matches_reference(kind, attention):
    x, timesteps, ref = tiny_io(kind)  # timesteps include fractional values (512.5 / 999.75)
    model = tiny_model(kind, attention=attention)
    assert not model.training
    with torch.no_grad():
        out = model(x, timesteps)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert rel_err(out, ref) <= FP32_REL_TOL


def test_attention_kernels_agree_on_random_input():
    qkv = torch.randn(2, 3 * 64, 40, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(U._attend_sdpa(qkv, 4), U._attend_einsum(qkv, 4), rtol=1e-5, atol=1e-6)


def test_set_attention_switches_every_layer():
    model = tiny_model("guided").set_attention("einsum")
    kinds = {m.attention for m in model.modules() if isinstance(m, U.AttentionBlock)}
    assert kinds == {"einsum"}
    with pytest.raises(ValueError):
        model.set_attention("flash")


@pytest.mark.parametrize("kind", ["guided", "improved"])
def test_timestep_embedding_matches_reference(kind):
    io = load_npz(f"tiny_{kind}_unet_io.npz")
    emb = U.timestep_embedding(torch.from_numpy(io["timesteps"]), 32)
    np.testing.assert_allclose(emb.numpy(), io["timestep_embedding_dim32"], rtol=0, atol=1e-6)


def test_timestep_embedding_cos_first_and_odd_dim():
    emb = U.timestep_embedding(torch.tensor([0.0, 3.0], dtype=torch.float64), 7)
    assert emb.shape == (2, 7) and emb.dtype == torch.float32
    assert torch.equal(emb[0, :3], torch.ones(3)) and torch.equal(emb[:, 6], torch.zeros(2))


def test_scalar_timestep_is_broadcast():
    x, timesteps, _ = tiny_io("guided")
    model = tiny_model("guided")
    with torch.no_grad():
        batched = model(x, torch.full((3,), 37.0))
        assert torch.equal(model(x, 37.0), batched)
        assert torch.equal(model(x, torch.tensor(37.0)), batched)


# ------------------------------------------------------------------------------------------- precision / layout


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["guided", "improved"])
def test_half_torso_runs_close_to_fp32(kind, dtype):
    x, timesteps, ref = tiny_io(kind)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    model = tiny_model(kind, precision=precision)
    assert model.torso_dtype == dtype
    assert model.time_embed[0].weight.dtype == torch.float32 and model.out[2].weight.dtype == torch.float32
    norms = [m for m in model.modules() if isinstance(m, U.GroupNorm32)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    with torch.no_grad():
        out = model(x, timesteps)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert rel_err(out, ref) <= HALF_REL_TOL[dtype]


def test_convert_to_fp16_and_bf16_methods():
    model = tiny_model("improved")
    assert model.convert_to_fp16().torso_dtype == torch.float16
    assert model.convert_to_bf16().torso_dtype == torch.bfloat16
    assert all(conv.weight.dtype == torch.bfloat16 for conv in model.torso_convs())


@pytest.mark.parametrize("kind", ["guided", "improved"])
def test_channels_last_matches_contiguous(kind):
    x, timesteps, _ = tiny_io(kind)
    with torch.no_grad():
        expected = tiny_model(kind)(x, timesteps)
        model = tiny_model(kind, channels_last=True)
        assert model.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last), timesteps)
    # Channels-last conv kernels sum in a different order: same FP32 tolerance as against the reference.
    assert rel_err(out, expected) <= FP32_REL_TOL


# --------------------------------------------------------------------------------------------- checkpoint loading


def test_load_unet_from_state_dict_and_file_agree(tmp_path):
    state = tiny_state_dict("improved")
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    from_dict = U.load_unet(state, tiny_config("improved"))
    from_file = U.load_unet(path, tiny_config("improved"))
    for (key, a), b in zip(from_dict.state_dict().items(), from_file.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, state[key]), key


def test_load_unet_missing_key_is_named(tmp_path):
    state = tiny_state_dict("guided")
    del state["middle_block.1.qkv.weight"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(U.CheckpointMismatchError, match=r"missing keys.*middle_block\.1\.qkv\.weight") as info:
        U.load_unet(path, tiny_config("guided"))
    assert str(path) in str(info.value)


def test_load_unet_wrong_shape_is_named():
    state = tiny_state_dict("guided")
    state["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(U.CheckpointMismatchError, match=r"wrong shapes.*out\.2\.weight.*\(3, 32, 3, 3\)"):
        U.load_unet(state, tiny_config("guided"))


def test_load_unet_wrong_config_reports_unexpected_keys():
    """The guided checkpoint under the improved config: different down/up-sampling modules."""
    with pytest.raises(U.CheckpointMismatchError, match=r"unexpected keys") as info:
        U.load_unet(tiny_state_dict("guided"), tiny_config("improved"))
    assert "missing keys" in str(info.value) and "input_blocks.2.0.op.weight" in str(info.value)


def test_load_unet_rejects_non_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(U.CheckpointMismatchError, match="not a state dict"):
        U.load_unet(path, tiny_config("guided"))
