"""Classifier registry, preprocessing (docs/reference-behaviour.md#ref-6-2, #ref-10-9 and #ref-10-10) and checkpoint
loading; offline, tiny models."""

import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_npz
from torch import nn

from densepure.models import classifiers as C
from densepure.models.checkpoints import CheckpointError, convert_hf_vit_state_dict, load_checkpoint_file
from densepure.models.classifiers import (
    Classifier,
    ClassifierError,
    ClassifierSpec,
    RandomWeightsWarning,
    build_classifier,
    get_classifier_spec,
    list_classifiers,
    register_classifier,
)
from densepure.models.preprocessing import (
    ClassifierInput,
    Normalization,
    center_crop,
    pil_bilinear_resize_levels,
    resize,
    resize_and_crop,
    shorter_side_size,
    timm_preprocessing,
)
from densepure.models.wideresnet import WideResNet

pytestmark = pytest.mark.filterwarnings("ignore::densepure.models.classifiers.RandomWeightsWarning")

BUILTINS = ["beit-large-512", "vit-b16-cifar10", "wrn-28-10", "wrn-50-2", "resnet-152", "mixer-b16-miil"]

# Reduced variants of the built-in architectures (same code paths, tiny widths/depths).
SMALL_KWARGS = {
    "beit-large-512": dict(depth=1, embed_dim=32, num_heads=2),
    "vit-b16-cifar10": dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2.0),
    "wrn-28-10": dict(depth=10, widen_factor=1),
    "wrn-50-2": dict(layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), stem_width=8),
    "resnet-152": dict(layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), stem_width=8),
    "mixer-b16-miil": dict(mlp_ratio=(0.0625, 0.25)),  # timm fixes depth/width of this arch
}
DATA_SIZE = {"imagenet": 256, "cifar10": 32}


class Recorder(nn.Module):
    """Stands in for the network: records what the preprocessing feeds it."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.num_classes = num_classes
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return torch.zeros(x.shape[0], self.num_classes)


def fed(name, mode, x):
    spec = get_classifier_spec(name)
    clf = Classifier(Recorder(spec.num_classes), spec.preprocessing(mode), name, mode)
    logits = clf(x)
    assert logits.shape == (x.shape[0], spec.num_classes)
    return clf.model.seen


def rand_images(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------------ resize


@pytest.mark.parametrize("factor", [2, 7])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_matches_fixture(factor, antialias):
    data = load_npz("resize_cases.npz")
    x = torch.from_numpy(data["x8"])
    key = f"bicubic_{'antialias_' if antialias else ''}x{factor}"
    out = resize(x, 8 * factor, "bicubic", antialias)
    torch.testing.assert_close(out, torch.from_numpy(data[key]), rtol=0, atol=1e-6)
    assert out.abs().max() > 1  # bicubic overshoots [-1, 1]; nobody clamps


def test_resize_identity_and_errors():
    x = rand_images((1, 3, 8, 8))
    assert resize(x, None) is x
    assert resize(x, (8, 8), "bicubic") is x
    assert resize(x, (4, 6), "bilinear").shape == (1, 3, 4, 6)
    with pytest.raises(ClassifierError, match="unknown resize mode"):
        resize(x, 4, "lanczos")


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_builtins():
    names = list_classifiers()
    assert set(BUILTINS) <= set(names)
    assert names == sorted(names)
    beit = get_classifier_spec("beit-large-512")
    assert (beit.dataset, beit.input_size, beit.interpolation, beit.antialias) == ("imagenet", 512, "bicubic", False)
    assert beit.architecture.startswith("beit_large_patch16_512")
    assert get_classifier_spec("wrn-28-10").reference_norm == Normalization(
        (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    )
    for name in ("wrn-50-2", "resnet-152", "mixer-b16-miil"):
        assert get_classifier_spec(name).reference_norm is None  # the reference's un-normalised [-1, 1]
    assert "un-normalised" in (C.build_classifier.__doc__ + C.__doc__)


def test_correct_norms_equal_timm_pretrained_configs():
    from timm.models import get_pretrained_cfg

    for name in ("wrn-50-2", "resnet-152", "mixer-b16-miil"):
        spec = get_classifier_spec(name)
        cfg = get_pretrained_cfg(spec.architecture)
        assert spec.correct_norm == Normalization(tuple(cfg.mean), tuple(cfg.std)), name
        assert cfg.input_size[-1] == spec.input_size
    beit_cfg = get_pretrained_cfg(get_classifier_spec("beit-large-512").architecture)
    assert beit_cfg.mean == beit_cfg.std == (0.5, 0.5, 0.5)  # so [-1, 1] is the right input for BEiT


def test_unknown_name_lists_known_names():
    with pytest.raises(ClassifierError) as info:
        build_classifier("vit-huge")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "'vit-huge'" in message and all(name in message for name in BUILTINS)
    with pytest.raises(ClassifierError, match="unknown timm model"):
        get_classifier_spec("timm:no_such_model_xyz")
    with pytest.raises(ClassifierError, match="reference' or 'correct"):
        build_classifier("wrn-28-10", preprocessing="fancy", depth=10, widen_factor=1)


def test_register_classifier_custom_model():
    def tiny_cnn(num_classes=10):
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    spec = ClassifierSpec(name="test-digits-cnn", dataset="digits", architecture="tiny cnn", num_classes=10,
                          input_size=None, factory=tiny_cnn)
    try:
        assert register_classifier(spec) is spec
        assert "test-digits-cnn" in list_classifiers()
        with pytest.raises(ClassifierError, match="already registered"):
            register_classifier(spec)

        @register_classifier
        def make_spec():  # decorator form with a factory returning a spec
            return ClassifierSpec(name="test-digits-cnn2", dataset="digits", architecture="tiny cnn",
                                  num_classes=3, input_size=(8, 8), interpolation="bilinear", factory=tiny_cnn)

        assert callable(make_spec)
        with pytest.warns(RandomWeightsWarning):
            clf = build_classifier("test-digits-cnn2")
        assert clf(rand_images((2, 1, 16, 16))).shape == (2, 3)
    finally:
        C.CLASSIFIERS.pop("test-digits-cnn", None)
        C.CLASSIFIERS.pop("test-digits-cnn2", None)
    with pytest.raises(ClassifierError, match="reserved"):
        register_classifier(ClassifierSpec("timm:x", "", "x", 10, None))
    with pytest.raises(ClassifierError, match="checkpoint format"):
        ClassifierSpec("bad", "", "x", 10, None, checkpoint_format="onnx")


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_builds_small_variant(name):
    spec = get_classifier_spec(name)
    size = DATA_SIZE[spec.dataset]
    torch.manual_seed(0)
    with pytest.warns(RandomWeightsWarning):
        clf = build_classifier(name, **SMALL_KWARGS[name])
    assert not clf.training and clf.preprocessing == spec.preprocessing("reference")
    with torch.no_grad():
        logits = clf(rand_images((2, 3, size, size)))
    assert logits.shape == (2, spec.num_classes) and torch.isfinite(logits).all()


def test_build_wires_correct_preprocessing():
    clf = build_classifier("wrn-28-10", preprocessing="correct", depth=10, widen_factor=1)
    assert clf.mode == "correct" and clf.preprocessing == get_classifier_spec("wrn-28-10").preprocessing("correct")
    assert clf.preprocessing.normalization.std == (0.2023, 0.1994, 0.2010)


def test_full_size_architectures_on_meta_device():
    """Full-size built-ins, shapes only (no memory): BEiT-L/16-512 and WRN-28-10 as the reference used them."""
    beit = get_classifier_spec("beit-large-512").build_model(device="meta")
    assert beit.patch_embed.img_size == (512, 512) and len(beit.blocks) == 24 and beit.embed_dim == 1024
    vit = get_classifier_spec("vit-b16-cifar10").build_model(device="meta")
    assert len(vit.blocks) == 12 and vit.head.out_features == 10 and vit.norm.eps == 1e-12
    with torch.device("meta"):
        wrn = WideResNet()
    n_params = sum(p.numel() for p in wrn.parameters())
    assert n_params == 36_479_194 + 10_096  # the usual WRN-28-10 count plus meliketoy's conv biases
    keys = set(wrn.state_dict())
    for key in ["conv1.weight", "conv1.bias", "layer1.0.bn1.running_mean", "layer1.0.conv1.bias",
                "layer1.0.shortcut.0.weight", "layer1.0.shortcut.0.bias", "layer2.0.shortcut.0.weight",
                "layer3.3.conv2.weight", "layer3.3.bn2.num_batches_tracked", "bn1.weight", "linear.weight"]:
        assert key in keys, key
    assert "layer1.1.shortcut.0.weight" not in keys and "layer3.4.conv1.weight" not in keys
    assert wrn.layer2[0].conv2.stride == (2, 2) and wrn.layer2[0].conv1.stride == (1, 1)


# ------------------------------------------------------------------------------------------------ preprocessing


def test_beit_reference_preprocessing():
    x = rand_images((2, 3, 256, 256))
    for mode in ("reference", "correct"):
        seen = fed("beit-large-512", mode, x)
        assert seen.shape == (2, 3, 512, 512)
        assert torch.equal(seen, F.interpolate(x, (512, 512), mode="bicubic", align_corners=False))
        assert seen.min() < -1 and seen.max() > 1  # no clamp


@pytest.mark.parametrize("name", ["wrn-50-2", "resnet-152", "mixer-b16-miil"])
def test_timm_imagenet_reference_feeds_unnormalised(name):
    x = rand_images((2, 3, 256, 256))
    resized = F.interpolate(x, (224, 224), mode="bicubic", align_corners=False)
    assert torch.equal(fed(name, "reference", x), resized)  # [-1, 1] as is (reference bug)
    norm = get_classifier_spec(name).correct_norm
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    torch.testing.assert_close(fed(name, "correct", x), ((resized + 1) / 2 - mean) / std, rtol=0, atol=1e-6)


def test_wrn_cifar_normalisation():
    x = rand_images((2, 3, 32, 32))
    x01 = (x + 1) / 2
    ref = (x01 - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2471, 0.2435, 0.2616]
    ).view(1, 3, 1, 1)
    assert torch.equal(fed("wrn-28-10", "reference", x), ref)  # no resize, reference std
    correct = fed("wrn-28-10", "correct", x)
    torch.testing.assert_close(correct * torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
                               + torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1), x01)


def old_vit_feature_extractor(x):
    """The 2022 ViTFeatureExtractor on float CHW images in [0, 1], written with numpy + Pillow
    (docs/reference-behaviour.md#ref-6-2)."""
    from PIL import Image

    out = []
    for img in ((x + 1) / 2).numpy():
        pil = Image.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8))  # to_pil_image: *255, uint8 cast
        pil = pil.resize((224, 224), resample=Image.BILINEAR)
        arr = np.array(pil).astype(np.float32) * (1 / 255.0)  # to_numpy_array(rescale=True)
        arr = arr.transpose(2, 0, 1)
        mean = np.array([0.5, 0.5, 0.5]).astype(np.float32)
        out.append((arr - mean[:, None, None]) / mean[:, None, None])
    return np.stack(out)


@pytest.mark.parametrize("size", [32, 27, 300])
def test_vit_reference_preprocessing_equals_pillow(size):
    """Our torch emulation equals Pillow bit for bit (up- and downsampling), incl. values at 0, 1 and level edges."""
    x = rand_images((3, 3, size, size), seed=size)
    x[0, 0, :2] = -1.0
    x[0, 1, :2] = 1.0
    x[1, 2, :3] = torch.randint(0, 256, (3, size)).float() / 255 * 2 - 1  # exactly on uint8 levels
    seen = fed("vit-b16-cifar10", "reference", x)
    assert seen.shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(seen.numpy(), old_vit_feature_extractor(x))
    levels = (seen + 1) / 2 * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)


def test_vit_float_bilinear_differs_from_pillow_by_one_level():
    """Documented: plain float bilinear + rounding is off by 1/255 on many pixels (intermediate uint8 rounding)."""
    x = rand_images((2, 3, 32, 32), seed=1)
    levels = torch.floor((x + 1) / 2 * 255)
    exact = pil_bilinear_resize_levels(levels, 224)
    approx = F.interpolate(levels, (224, 224), mode="bilinear", antialias=True, align_corners=False).round()
    diff = (exact - approx).abs()
    assert diff.max() == 1 and 0 < (diff > 0).float().mean() < 0.3


def test_vit_correct_preprocessing():
    x = rand_images((2, 3, 32, 32))
    seen = fed("vit-b16-cifar10", "correct", x)
    resized = F.interpolate(x, (224, 224), mode="bilinear", antialias=True, align_corners=False)
    expected = ((resized + 1) / 2 - 0.5) / 0.5
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BUILTINS)
def test_preprocessing_has_no_host_sync(name):
    """Runs on the meta device: any data-dependent host sync (.item(), numpy) would raise."""
    spec = get_classifier_spec(name)
    size = DATA_SIZE[spec.dataset]
    for mode in ("reference", "correct"):
        module = ClassifierInput(spec.preprocessing(mode)).to("meta")
        out = module(torch.empty(2, 3, size, size, device="meta"))
        expected = size if spec.input_size is None else spec.input_size
        assert out.device.type == "meta" and out.shape == (2, 3, expected, expected)


def test_half_precision_input_keeps_dtype():
    x = rand_images((1, 3, 32, 32)).half()
    for name in ("vit-b16-cifar10", "wrn-28-10"):
        assert ClassifierInput(get_classifier_spec(name).preprocessing())(x).dtype == torch.float16


def test_timm_any_model_uses_its_config():
    """timm:<name> takes timm's data config: test_resnet is bilinear, 160 px, crop_pct 0.95, mean = std = 0.5, so a
    32 x 32 batch is resized to floor(160 / 0.95) = 168 and its center 160 x 160 (offset 4) kept."""
    spec = get_classifier_spec("timm:test_resnet")
    assert spec.input_size == (160, 160) and spec.interpolation == "bilinear" and spec.antialias
    assert (spec.crop_pct, spec.crop_mode, spec.timm_data_config) == (0.95, "center", True)
    x = rand_images((1, 3, 32, 32))
    resized = F.interpolate(x, (168, 168), mode="bilinear", antialias=True, align_corners=False)[..., 4:164, 4:164]
    expected = ((resized + 1) / 2 - 0.5) / 0.5
    torch.testing.assert_close(fed("timm:test_resnet", "reference", x), expected, rtol=0, atol=1e-6)
    with pytest.warns(RandomWeightsWarning):
        clf = build_classifier("timm:test_resnet", num_classes=7)
    assert clf.preprocessing == spec.preprocessing("reference") == spec.preprocessing("correct")
    assert clf(x).shape == (1, 7)


def pil_and_tensor(shape, channels, seed):
    """A random 8-bit image as a PIL image and as the purified-batch tensor in [-1, 1] it stands for."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    return image, torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 * 2 - 1


@pytest.mark.parametrize("model_name", ["test_efficientnet.r160_in1k", "test_resnet.r160_in1k"])  # bicubic, bilinear
@pytest.mark.parametrize("shape, crop_mode", [((32, 32), "center"), ((40, 56), "center"), ((256, 256), "center"),
                                              ((300, 200), "center"), ((32, 32), "squash")])
def test_timm_preprocessing_matches_create_transform(model_name, shape, crop_mode):
    """What the classifier is fed equals timm.data.create_transform(**resolve_model_data_config(model)) applied to
    the same image as a PIL image: Pillow resizes in two 8-bit passes (each rounded and clipped), we in float
    (clipped per pass), so each pixel may differ by one 8-bit level plus float error: tolerance 1.1 / 255 in [0, 1]
    units. Without the crop, the per-pass clip or with another interpolation the difference is many levels."""
    import timm
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model(model_name, pretrained=False, num_classes=3)
    config = {**resolve_model_data_config(model), "crop_mode": crop_mode}
    image, x = pil_and_tensor(shape, 3, seed=sum(shape))
    expected = create_transform(**config)(image)
    seen = ClassifierInput(timm_preprocessing(config))(x)[0]
    std = torch.tensor(config["std"]).view(3, 1, 1)
    levels = (seen - expected).abs() * std * 255  # back to 8-bit levels of [0, 1]
    assert seen.shape == expected.shape == (3, 160, 160)
    assert levels.max() <= 1.1, levels.max()
    assert (levels > 0.5).float().mean() < 0.3  # most pixels are Pillow's to the level


def test_center_crop_and_shorter_side_follow_torchvision():
    """Offsets, padding (black) and the shorter-side rule of torchvision's CenterCrop and Resize(int), on x01."""
    import torchvision.transforms.functional as TF

    x = rand_images((1, 3, 7, 12))
    for size in ((4, 5), (7, 12), (9, 15), (3, 14)):
        ours = (center_crop(x, size) + 1) / 2
        torch.testing.assert_close(ours, TF.center_crop((x + 1) / 2, list(size)), rtol=0, atol=0)
    for height, width in ((7, 12), (12, 7), (10, 10)):
        image = torch.zeros(1, height, width)
        assert shorter_side_size(height, width, 9) == tuple(TF.resize(image, 9, antialias=True).shape[-2:])
    with pytest.raises(ClassifierError, match="crop mode 'border'"):
        resize_and_crop(x, 4, 0.9, "border")


def test_timm_kwargs_reach_the_model_and_its_data_config():
    """kwargs go to timm.create_model; in_chans=1 takes the average of the config's mean and std."""
    with pytest.warns(RandomWeightsWarning):
        clf = build_classifier("timm:test_efficientnet.r160_in1k", num_classes=10, in_chans=1)
    assert clf.model.conv_stem.in_channels == 1
    norm = clf.preprocessing.normalization
    assert norm.mean == pytest.approx((sum((0.485, 0.456, 0.406)) / 3,)) and len(norm.std) == 1
    assert clf(rand_images((2, 1, 8, 8))).shape == (2, 10)
    with pytest.raises(ClassifierError, match=r"timm:test_resnet\(num_classes=None, no_such_option=1\) failed"):
        build_classifier("timm:test_resnet", no_such_option=1)


# ------------------------------------------------------------------------------------------------ checkpoints


def test_missing_checkpoint_names_path(tmp_path):
    path = tmp_path / "nope" / "wide-resnet-28x10.t7"
    with pytest.raises(CheckpointError, match="not found.*wide-resnet-28x10.t7"):
        build_classifier("wrn-28-10", checkpoint=path, depth=10, widen_factor=1)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file.*model.safetensors"):
        load_checkpoint_file(tmp_path)


def test_wrong_keys_name_first_key_and_path(tmp_path):
    sd = WideResNet(10, 1, 0.3, 10).state_dict()
    sd["conv_first.weight"] = sd.pop("conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        build_classifier("wrn-28-10", checkpoint=path, depth=10, widen_factor=1)
    message = str(info.value)
    assert "\n" not in message and "bad.pth" in message
    assert "missing keys (first: conv1.weight)" in message and "unexpected keys (first: conv_first.weight)" in message
    torch.save(WideResNet(10, 1, 0.3, 10).state_dict(), tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="ok.pth: shape mismatch for linear.weight"):
        build_classifier("wrn-28-10", checkpoint=tmp_path / "ok.pth", num_classes=5, depth=10, widen_factor=1)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read checkpoint.*junk.pth"):
        load_checkpoint_file(tmp_path / "junk.pth")


def test_nested_and_prefixed_state_dicts(tmp_path):
    torch.manual_seed(0)
    src = build_classifier("timm:test_resnet")
    sd = src.model.state_dict()
    x = rand_images((2, 3, 32, 32))
    torch.save({"model": sd, "epoch": 3}, tmp_path / "nested.pth")
    clf = build_classifier("timm:test_resnet", checkpoint=tmp_path / "nested.pth")
    torch.testing.assert_close(clf(x), src(x), rtol=0, atol=0)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for i, wrapped in enumerate([{"state_dict": sd}, {"net": {f"module.{k}": v for k, v in sd.items()}}]):
        torch.save(wrapped, tmp_path / f"w{i}.pth")
    for path in [tmp_path / "w0.pth", tmp_path / "w1.pth", tmp_path / "w.safetensors"]:
        loaded = load_checkpoint_file(path)
        assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_beit_original_checkpoint_format(tmp_path):
    """Original BEiT .pth: nested under 'model', with relative_position_index buffers (dropped by timm's filter)."""
    torch.manual_seed(0)
    kwargs = SMALL_KWARGS["beit-large-512"]
    src = build_classifier("beit-large-512", **kwargs)
    sd = dict(src.model.state_dict())
    for i, block in enumerate(src.model.blocks):
        sd[f"blocks.{i}.attn.relative_position_index"] = block.attn.relative_position_index
    torch.save({"model": sd}, tmp_path / "beit_large_patch16_512_pt22k_ft22kto1k.pth")
    clf = build_classifier("beit-large-512", checkpoint=tmp_path / "beit_large_patch16_512_pt22k_ft22kto1k.pth",
                           **kwargs)
    x = rand_images((1, 3, 256, 256))
    with torch.no_grad():
        torch.testing.assert_close(clf(x), src(x), rtol=0, atol=0)


# ---- HF ViT -> timm


def hf_legacy_keys_from_timm(sd):
    """Inverse of the conversion, written independently: timm ViT keys -> transformers<5 ViTForImageClassification."""
    out = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
           "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for leaf in ("weight", "bias"):
            q, k, v = sd[b + "attn.qkv." + leaf].chunk(3, dim=0)
            out.update({h + "attention.attention.query." + leaf: q, h + "attention.attention.key." + leaf: k,
                        h + "attention.attention.value." + leaf: v,
                        h + "attention.output.dense." + leaf: sd[b + "attn.proj." + leaf],
                        h + "layernorm_before." + leaf: sd[b + "norm1." + leaf],
                        h + "layernorm_after." + leaf: sd[b + "norm2." + leaf],
                        h + "intermediate.dense." + leaf: sd[b + "mlp.fc1." + leaf],
                        h + "output.dense." + leaf: sd[b + "mlp.fc2." + leaf]})
    return out


def test_hf_vit_conversion_round_trip(tmp_path):
    torch.manual_seed(0)
    kwargs = SMALL_KWARGS["vit-b16-cifar10"]
    src = build_classifier("vit-b16-cifar10", **kwargs)
    sd = {k: v + 0.01 * torch.randn_like(v) for k, v in src.model.state_dict().items()}
    src.model.load_state_dict(sd)
    hf = hf_legacy_keys_from_timm(sd)
    hf["vit.pooler.dense.weight"] = torch.zeros(32, 32)  # dropped by the conversion
    converted = convert_hf_vit_state_dict(hf)
    assert converted.keys() == sd.keys()
    assert all(torch.equal(converted[k], sd[k]) for k in sd)
    assert convert_hf_vit_state_dict(sd).keys() == sd.keys()  # timm keys pass through
    torch.save(hf, tmp_path / "pytorch_model.bin")
    clf = build_classifier("vit-b16-cifar10", checkpoint=tmp_path, **kwargs)  # HF folder
    x = rand_images((2, 3, 32, 32))
    torch.testing.assert_close(clf(x), src(x), rtol=0, atol=0)


def test_hf_vit_logits_equal_transformers_model(tmp_path):
    """A real (tiny, random) transformers ViTForImageClassification, saved by save_pretrained, gives our logits."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=224, patch_size=16, num_labels=10)
    hf = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    clf = build_classifier("vit-b16-cifar10", checkpoint=tmp_path, **SMALL_KWARGS["vit-b16-cifar10"])
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = hf(pixel_values=pixel_values).logits
        torch.testing.assert_close(clf.model(pixel_values), expected, rtol=0, atol=2e-5)
    from safetensors.torch import load_file

    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    clf_bin = build_classifier("vit-b16-cifar10", checkpoint=tmp_path / "pytorch_model.bin",
                               **SMALL_KWARGS["vit-b16-cifar10"])
    with torch.no_grad():
        torch.testing.assert_close(clf_bin.model(pixel_values), expected, rtol=0, atol=2e-5)


# ---- meliketoy WRN pickled whole model

MELIKETOY_SOURCE = textwrap.dedent(
    """
    import torch.nn as nn
    import torch.nn.functional as F

    def conv3x3(in_planes, out_planes, stride=1):
        return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=True)

    class wide_basic(nn.Module):
        def __init__(self, in_planes, planes, dropout_rate, stride=1):
            super(wide_basic, self).__init__()
            self.bn1 = nn.BatchNorm2d(in_planes)
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
            self.dropout = nn.Dropout(p=dropout_rate)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

        def forward(self, x):
            out = self.dropout(self.conv1(F.relu(self.bn1(x))))
            out = self.conv2(F.relu(self.bn2(out)))
            out += self.shortcut(x)
            return out

    class Wide_ResNet(nn.Module):
        def __init__(self, depth, widen_factor, dropout_rate, num_classes):
            super(Wide_ResNet, self).__init__()
            self.in_planes = 16
            n = (depth - 4) / 6
            k = widen_factor
            nStages = [16, 16 * k, 32 * k, 64 * k]
            self.conv1 = conv3x3(3, nStages[0])
            self.layer1 = self._wide_layer(wide_basic, nStages[1], n, dropout_rate, stride=1)
            self.layer2 = self._wide_layer(wide_basic, nStages[2], n, dropout_rate, stride=2)
            self.layer3 = self._wide_layer(wide_basic, nStages[3], n, dropout_rate, stride=2)
            self.bn1 = nn.BatchNorm2d(nStages[3], momentum=0.9)
            self.linear = nn.Linear(nStages[3], num_classes)

        def _wide_layer(self, block, planes, num_blocks, dropout_rate, stride):
            strides = [stride] + [1] * (int(num_blocks) - 1)
            layers = []
            for stride in strides:
                layers.append(block(self.in_planes, planes, dropout_rate, stride))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            out = self.conv1(x)
            out = self.layer1(out)
            out = self.layer2(out)
            out = self.layer3(out)
            out = F.relu(self.bn1(out))
            out = F.avg_pool2d(out, 8)
            out = out.view(out.size(0), -1)
            out = self.linear(out)
            return out
    """
)


@pytest.fixture
def meliketoy_checkpoints(tmp_path):
    """A small WRN-10-1 of the original project's class, pickled whole (zip and legacy formats) like its ``.t7``."""
    package = types.ModuleType("networks")
    module = types.ModuleType("networks.wide_resnet")
    package.wide_resnet = module
    sys.modules["networks"], sys.modules["networks.wide_resnet"] = package, module
    try:
        exec(compile(MELIKETOY_SOURCE, "networks/wide_resnet.py", "exec"), module.__dict__)
        torch.manual_seed(0)
        net = module.Wide_ResNet(10, 1, 0.3, 10)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
        net.eval()
        x = rand_images((2, 3, 32, 32))
        x01 = (x + 1) / 2
        mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
        std = torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = net((x01 - mean) / std)
        paths = {"zip": tmp_path / "wide-resnet-10x1.t7", "legacy": tmp_path / "wide-resnet-10x1-legacy.t7"}
        state = {"net": net, "acc": 95.5, "epoch": 200}
        torch.save(state, paths["zip"])
        with warnings.catch_warnings():  # torch may warn that it cannot find the exec'd source; fine
            warnings.simplefilter("ignore")
            torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)
    finally:
        del sys.modules["networks"], sys.modules["networks.wide_resnet"]
    return paths, x, expected


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_wrn_pickled_whole_model_without_source(meliketoy_checkpoints, fmt):
    paths, x, expected = meliketoy_checkpoints
    assert "networks.wide_resnet" not in sys.modules
    with pytest.raises(Exception):  # the plain loader cannot unpickle it without the original source
        torch.load(paths[fmt], weights_only=False)
    clf = build_classifier("wrn-28-10", checkpoint=paths[fmt], depth=10, widen_factor=1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), expected, rtol=0, atol=1e-6)
    assert "networks.wide_resnet" not in sys.modules  # nothing of the foreign module was imported or created


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file if unpickled with the plain pickle module


def test_standin_unpickler_runs_no_foreign_code(tmp_path):
    marker = tmp_path / "pwned"
    sd = WideResNet(10, 1, 0.3, 10).state_dict()
    torch.save({"state_dict": sd, "evil": _Evil(str(marker))}, tmp_path / "evil.pth")
    loaded = load_checkpoint_file(tmp_path / "evil.pth")
    assert loaded.keys() == sd.keys() and not marker.exists()
