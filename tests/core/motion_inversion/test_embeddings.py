"""Motion-embedding attention against float64 references written independently (loops, explicit weights)."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.motion_inversion.embeddings import (
    ApplyOptions,
    FORMAT_TAG,
    LayerEmbedding,
    LayerSpec,
    MotionEmbeddingAttention,
    MotionEmbeddingPatch,
    MotionEmbeddings,
    combine,
    compatibility_error,
    load_motion_embeddings,
    save_motion_embeddings,
    sd15_layer_specs,
    sd15_token_hw,
    select_attention_layers,
)
from pix2gif_core.animatediff.motion_module import MotionModule, TemporalSelfAttention, global_temporal_attention

C = 32
HEADS = 8
LAYER = "down_blocks.2.motion_modules.0.attention_blocks.1"

SD15_V2_MODULES = {
    **{f"down_blocks.{i}.motion_modules.{j}": c for i, c in enumerate((320, 640, 1280, 1280)) for j in range(2)},
    "mid_block.motion_modules.0": 1280,
    **{f"up_blocks.{i}.motion_modules.{j}": c for i, c in enumerate((1280, 1280, 640, 320)) for j in range(3)},
}


def _attention(seed: int = 0) -> TemporalSelfAttention:
    torch.manual_seed(seed)
    return TemporalSelfAttention(C, pe_length=32).double()


def _layer(frames: int, token_hw: tuple[int, int], seed: int = 1, with_value: bool = True) -> LayerEmbedding:
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(1, frames, C, generator=g, dtype=torch.float64)
    v = torch.randn(token_hw[0] * token_hw[1], frames, C, generator=g, dtype=torch.float64) if with_value else None
    return LayerEmbedding(qk, v, token_hw)


def _embeddings(layers: dict[str, LayerEmbedding], frames: int, version: str = "v2") -> MotionEmbeddings:
    return MotionEmbeddings(layers, frames, (64, 64), version)


# ---- independent float64 references -----------------------------------------------------------------------------


def _pe(frames: int) -> torch.Tensor:
    pe = torch.zeros(frames, C, dtype=torch.float64)
    for p in range(frames):
        for i in range(0, C, 2):
            angle = p / (10000.0 ** (i / C))
            pe[p, i], pe[p, i + 1] = math.sin(angle), math.cos(angle)
    return pe


def _reference_attention(attn: TemporalSelfAttention, x_qk: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
    """Per-head softmax attention with explicit einsums; scale key_scale/sqrt(head_dim)."""
    d = C // HEADS
    wq, wk, wv = (w.detach().double() for w in (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight))
    q = torch.einsum("nfc,oc->nfo", x_qk, wq).reshape(*x_qk.shape[:2], HEADS, d)
    k = torch.einsum("nfc,oc->nfo", x_qk, wk).reshape(*x_qk.shape[:2], HEADS, d)
    v = torch.einsum("nfc,oc->nfo", x_v, wv).reshape(*x_v.shape[:2], HEADS, d)
    scores = torch.einsum("nfhd,nghd->nhfg", q, k) * (attn.key_scale / math.sqrt(d))
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("nhfg,nghd->nfhd", weights, v).reshape(x_qk.shape)


def _linear_weights(size_in: int, size_out: int, align_corners: bool) -> torch.Tensor:
    """(size_out, size_in) 1-D linear interpolation matrix with PyTorch's source-coordinate conventions."""
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for j in range(size_out):
        if align_corners:
            src = 0.0 if size_out == 1 else j * (size_in - 1) / (size_out - 1)
        else:
            src = max((j + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), size_in - 1)
        i1 = min(i0 + 1, size_in - 1)
        frac = src - i0
        weights[j, i0] += 1.0 - frac
        weights[j, i1] += frac
    return weights


def _reference_value(layer: LayerEmbedding, token_hw: tuple[int, int], frames: int, mode: str) -> torch.Tensor:
    (h, w), (th, tw) = layer.token_hw, token_hw
    grid = layer.v.reshape(h, w, -1, C)
    grid = torch.einsum("yY,xX,YXlc->yxlc", _linear_weights(h, th, False), _linear_weights(w, tw, False), grid)
    value = torch.einsum("fl,slc->sfc", _linear_weights(layer.v.shape[1], frames, True), grid.reshape(th * tw, -1, C))
    if mode == "object":
        diffs = value.clone()
        for i in range(1, frames):
            diffs[:, i] = value[:, i] - value[:, i - 1]
        value = diffs
    return value


def _reference_output(
    attn: TemporalSelfAttention,
    layer: LayerEmbedding,
    hidden: torch.Tensor,
    token_hw: tuple[int, int],
    mode: str,
    strength: float,
) -> torch.Tensor:
    frames = hidden.shape[1]
    pe = _pe(frames)
    qk = torch.einsum("fl,lc->fc", _linear_weights(layer.qk.shape[1], frames, True), layer.qk[0])
    x_qk = hidden + pe + strength * qk
    x_v = hidden + pe
    if mode != "camera" and layer.v is not None:
        value = _reference_value(layer, token_hw, frames, mode)
        positions = token_hw[0] * token_hw[1]
        x_v = x_v.clone()
        for n in range(hidden.shape[0]):  # b-major: sequence n is position n mod (h·w) of video n // (h·w)
            x_v[n] += strength * value[n % positions]
    return _reference_attention(attn, x_qk, x_v)


def _assert_close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-10) -> None:
    """Max-abs-error check scaled by the reference's size (torch.testing's first call costs seconds of imports)."""
    assert got.shape == want.shape
    error = float((got.detach().double() - want.detach().double()).abs().max())
    assert error <= tol * (1.0 + float(want.abs().max())), f"max abs error {error:.3g}"


def _run(attn: TemporalSelfAttention, variant, hidden: torch.Tensor) -> torch.Tensor:
    """The variant with the float64 PE of the reference (the module's table is rounded to float32)."""
    return variant(attn, hidden, _pe(hidden.shape[1]))


# ---- attention variant -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_value", [True, False])
def test_zero_embeddings_equal_plain_attention_exactly(with_value: bool) -> None:
    attn = _attention().float()
    specs = [LayerSpec(LAYER, C, (2, 3))]
    zero = MotionEmbeddings.zeros(specs, 6, (256, 384), "v2", with_value=with_value).layers[LAYER]
    hidden = torch.randn(2 * 6, 6, C)
    variant = MotionEmbeddingAttention(zero, (2, 3))
    with torch.no_grad():
        assert torch.equal(attn(hidden, variant), attn(hidden))


@pytest.mark.parametrize("mode", ["as_trained", "camera", "object"])
def test_strength_zero_equals_plain_attention_exactly(mode: str) -> None:
    attn = _attention()
    hidden = torch.randn(12, 5, C, dtype=torch.float64)
    variant = MotionEmbeddingAttention(_layer(5, (2, 3)), (2, 3), ApplyOptions(mode, strength=0.0))
    assert torch.equal(_run(attn, variant, hidden), _run(attn, global_temporal_attention, hidden))


@pytest.mark.parametrize("mode", ["as_trained", "camera", "object"])
@pytest.mark.parametrize("strength", [1.0, 0.6, -1.5])
def test_modes_and_strength_match_reference(mode: str, strength: float) -> None:
    attn = _attention()
    layer = _layer(7, (2, 3))
    hidden = torch.randn(3 * 6, 7, C, dtype=torch.float64)  # 3 videos × 6 positions
    variant = MotionEmbeddingAttention(layer, (2, 3), ApplyOptions(mode, strength))
    want = _reference_output(attn, layer, hidden, (2, 3), mode, strength)
    _assert_close(_run(attn, variant, hidden), want)


@pytest.mark.parametrize("frames", [4, 11, 1])
@pytest.mark.parametrize("mode", ["as_trained", "object"])
def test_frame_interpolation_matches_reference(frames: int, mode: str) -> None:
    attn = _attention()
    layer = _layer(6, (2, 2))
    hidden = torch.randn(2 * 4, frames, C, dtype=torch.float64)
    variant = MotionEmbeddingAttention(layer, (2, 2), ApplyOptions(mode, strength=0.8))
    want = _reference_output(attn, layer, hidden, (2, 2), mode, 0.8)
    _assert_close(_run(attn, variant, hidden), want)


@pytest.mark.parametrize("token_hw", [(5, 6), (2, 2), (3, 7)])
def test_value_embedding_spatial_interpolation_matches_reference(token_hw: tuple[int, int]) -> None:
    attn = _attention()
    layer = _layer(6, (3, 4))
    hidden = torch.randn(2 * token_hw[0] * token_hw[1], 8, C, dtype=torch.float64)
    variant = MotionEmbeddingAttention(layer, token_hw, ApplyOptions("object", resolution_policy="interpolate"))
    want = _reference_output(attn, layer, hidden, token_hw, "object", 1.0)
    _assert_close(_run(attn, variant, hidden), want)


def test_key_scale_is_honoured() -> None:
    attn = _attention()
    attn.key_scale = 0.4
    layer = _layer(5, (2, 2))
    hidden = torch.randn(8, 5, C, dtype=torch.float64)
    want = _reference_output(attn, layer, hidden, (2, 2), "as_trained", 1.0)
    _assert_close(_run(attn, MotionEmbeddingAttention(layer, (2, 2)), hidden), want)


def test_refuse_policy_raises_only_when_value_embedding_is_used() -> None:
    layer = _layer(6, (3, 4))
    with pytest.raises(Pix2GifInputError, match=r"'my\.layer'.*3×4.*4×4"):
        MotionEmbeddingAttention(layer, (4, 4), ApplyOptions(resolution_policy="refuse"), layer_name="my.layer")
    MotionEmbeddingAttention(layer, (4, 4), ApplyOptions("camera", resolution_policy="refuse"))
    MotionEmbeddingAttention(layer, (3, 4), ApplyOptions(resolution_policy="refuse"))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"mode": "hybrid"}, "mode 'hybrid'"), ({"resolution_policy": "crop"}, "resolution policy"), ({"strength": math.inf}, "strength")],
)
def test_bad_options_raise_named_errors(kwargs, fragment) -> None:
    with pytest.raises(Pix2GifInputError, match=fragment):
        ApplyOptions(**kwargs)


def test_embeddings_made_in_inference_mode_work_inside_and_outside_it() -> None:
    attn = _attention()
    hidden = torch.randn(8, 5, C, dtype=torch.float64)
    with torch.inference_mode():
        layer = _layer(5, (2, 2))
        variant = MotionEmbeddingAttention(layer, (2, 2))
        inside = _run(attn, variant, hidden)
    with torch.no_grad():
        outside = _run(attn, variant, hidden)
    want = _reference_output(attn, layer, hidden, (2, 2), "as_trained", 1.0)
    _assert_close(inside, want)
    _assert_close(outside, want)


def test_cache_follows_in_place_updates() -> None:
    attn = _attention()
    layer = _layer(5, (2, 2))
    hidden = torch.randn(8, 5, C, dtype=torch.float64)
    variant = MotionEmbeddingAttention(layer, (2, 2))
    before = _run(attn, variant, hidden)
    assert variant.prepared(5, hidden)[0] is variant.prepared(5, hidden)[0]
    with torch.no_grad():
        layer.v.mul_(2.0)
    want = _reference_output(attn, layer, hidden, (2, 2), "as_trained", 1.0)
    got = _run(attn, variant, hidden)
    assert not torch.allclose(got, before)
    _assert_close(got, want)


# ---- combination, compatibility, selection ---------------------------------------------------------------------


def test_combine_is_linear_and_applies_as_summed_tensors() -> None:
    first = _embeddings({LAYER: _layer(5, (2, 2), seed=1)}, 5)
    second = _embeddings({LAYER: _layer(5, (2, 2), seed=2)}, 5)
    mixed = combine([(0.5, first), (-2.0, second)]).layers[LAYER]
    a, b = first.layers[LAYER], second.layers[LAYER]
    summed = LayerEmbedding(0.5 * a.qk - 2.0 * b.qk, 0.5 * a.v - 2.0 * b.v, (2, 2))
    _assert_close(mixed.qk, summed.qk, 1e-15)
    _assert_close(mixed.v, summed.v, 1e-15)
    attn = _attention()
    hidden = torch.randn(8, 5, C, dtype=torch.float64)
    want = _reference_output(attn, summed, hidden, (2, 2), "object", 1.0)
    _assert_close(_run(attn, MotionEmbeddingAttention(mixed, (2, 2), ApplyOptions("object")), hidden), want)


@pytest.mark.parametrize(
    "other, fragment",
    [
        (lambda: _embeddings({LAYER: _layer(5, (2, 2))}, 5, version="v3"), "version v3"),
        (lambda: _embeddings({"up_blocks.1.motion_modules.0.attention_blocks.0": _layer(5, (2, 2))}, 5), "layers"),
        (lambda: _embeddings({LAYER: _layer(6, (2, 2))}, 6), "6 trained frames"),
        (lambda: _embeddings({LAYER: _layer(5, (3, 2))}, 5), "token grid"),
        (lambda: _embeddings({LAYER: _layer(5, (2, 2), with_value=False)}, 5), "value embedding absent"),
    ],
)
def test_incompatible_combinations_raise_naming_the_input(other, fragment) -> None:
    base = _embeddings({LAYER: _layer(5, (2, 2))}, 5)
    with pytest.raises(Pix2GifInputError, match=f"input 3.*{fragment}"):
        combine([(1.0, base), (1.0, base), (0.5, other())])


def test_compatibility_error_names_version_and_layout() -> None:
    embeddings = _embeddings({LAYER: _layer(5, (2, 2))}, 5)
    channels = {"down_blocks.2.motion_modules.0": C}
    assert compatibility_error(embeddings, "v2", channels) is None
    assert compatibility_error(embeddings, "v2", {LAYER: C}) is None
    assert "v2 motion module, this one is v3" in compatibility_error(embeddings, "v3", channels)
    assert "does not exist" in compatibility_error(embeddings, "v2", {"down_blocks.1.motion_modules.0": C})
    assert "640 in the motion module" in compatibility_error(embeddings, "v2", {"down_blocks.2.motion_modules.0": 640})


# The reference's UNet3D (diffusers UNet3DConditionModel as ZeroScope configures it): per down/up block its type
# and channels; temporal attentions ("temp_attentions") exist only in the CrossAttn blocks. Block i of the down
# path works at 1/(8·2^i) of the image, block i of the up path at 1/(8·2^(3−i)). Motion Inversion's config
# combinations [down,1280], [up,1280] pick the temporal attentions of the 1280-channel down and up blocks; its
# saved value embeddings for a 320×576 video are (180, 32, 1280), i.e. 10×18 tokens (methods.md §4.2, §4.5).
UNET3D_BLOCKS = {
    "down": [("CrossAttnDownBlock3D", 320), ("CrossAttnDownBlock3D", 640), ("CrossAttnDownBlock3D", 1280),
             ("DownBlock3D", 1280)],
    "up": [("UpBlock3D", 1280), ("CrossAttnUpBlock3D", 1280), ("CrossAttnUpBlock3D", 640),
           ("CrossAttnUpBlock3D", 320)],
}
OFFICIAL_COMBINATIONS = (("down", 1280), ("up", 1280))
#: AnimateDiff's SD1.5 motion modules per block: down and up paths, modules per block (methods.md §1.3)
ANIMATEDIFF_MODULES_PER_BLOCK = {"down": 2, "up": 3}


def _downsampling(direction: str, block: int) -> int:
    return 8 * 2 ** (block if direction == "down" else 3 - block)


def _official_attention_layers() -> set[str]:
    """AnimateDiff attention layers at the (path, resolution) of every temporal attention Motion Inversion trains."""
    official = {(direction, _downsampling(direction, block))
                for direction, channels in OFFICIAL_COMBINATIONS
                for block, (kind, width) in enumerate(UNET3D_BLOCKS[direction])
                if kind.startswith("CrossAttn") and width == channels}
    return {f"{direction}_blocks.{block}.motion_modules.{module}.attention_blocks.{attention}"
            for direction, per_block in ANIMATEDIFF_MODULES_PER_BLOCK.items() for block in range(4)
            if (direction, _downsampling(direction, block)) in official
            for module in range(per_block) for attention in range(2)}


def test_default_layers_are_motion_inversions_own() -> None:
    chosen = select_attention_layers(SD15_V2_MODULES)
    assert set(chosen) == _official_attention_layers() and set(chosen.values()) == {1280}
    specs = sd15_layer_specs(SD15_V2_MODULES, (320 // 8, 576 // 8))
    assert {spec.token_hw for spec in specs} == {(10, 18)}, "the reference's 180-token value embeddings at 320×576"


def test_layer_presets_and_explicit_selection() -> None:
    assert select_attention_layers(SD15_V2_MODULES, "official") == select_attention_layers(SD15_V2_MODULES)
    wider = select_attention_layers(SD15_V2_MODULES, "1280")
    lowest = {f"{block}.motion_modules.{module}.attention_blocks.{attention}" for block, count in
              (("down_blocks.3", 2), ("up_blocks.0", 3)) for module in range(count) for attention in range(2)}
    assert set(wider) == _official_attention_layers() | lowest, "1280: also the 1/64 level (the former default)"
    assert len(select_attention_layers(SD15_V2_MODULES, "640+1280")) == (3 * 2 + 3 * 3) * 2
    assert len(select_attention_layers(SD15_V2_MODULES, "all")) == 21 * 2
    explicit = select_attention_layers(SD15_V2_MODULES, ["mid_block.motion_modules.0", LAYER])
    assert list(explicit) == [LAYER, "mid_block.motion_modules.0.attention_blocks.0", "mid_block.motion_modules.0.attention_blocks.1"]
    by_predicate = select_attention_layers(SD15_V2_MODULES, lambda name, c: name.startswith("up_blocks.3"))
    assert len(by_predicate) == 6 and set(by_predicate.values()) == {320}
    with pytest.raises(Pix2GifInputError, match="down_blocks.9"):
        select_attention_layers(SD15_V2_MODULES, ["down_blocks.9.motion_modules.0"])
    with pytest.raises(Pix2GifInputError, match="preset '320'"):
        select_attention_layers(SD15_V2_MODULES, "320")


def test_sd15_token_grids() -> None:
    expected = {"down_blocks.0": 64, "down_blocks.1": 32, "down_blocks.2": 16, "down_blocks.3": 8, "mid_block": 8,
                "up_blocks.0": 8, "up_blocks.1": 16, "up_blocks.2": 32, "up_blocks.3": 64}
    for block, size in expected.items():
        assert sd15_token_hw(f"{block}.motion_modules.0", (64, 64)) == (size, size)
    assert sd15_token_hw("down_blocks.3.motion_modules.1", (40, 72)) == (5, 9)  # 320×576 pixels
    assert sd15_token_hw("up_blocks.1.motion_modules.2", (45, 31)) == (12, 8)  # rounding up per level
    specs = sd15_layer_specs(SD15_V2_MODULES, (64, 64))
    assert specs[0] == LayerSpec("down_blocks.2.motion_modules.0.attention_blocks.0", 1280, (16, 16))


# ---- file format -----------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    other = "up_blocks.1.motion_modules.2.attention_blocks.0"
    embeddings = MotionEmbeddings(
        {LAYER: _layer(5, (2, 3)), other: _layer(5, (4, 1), seed=3, with_value=False)}, 5, (256, 384), "v3",
        {"source": "car.mp4"},
    )
    path = tmp_path / "walk.safetensors"
    save_motion_embeddings(embeddings, path)
    assert [entry.name for entry in tmp_path.iterdir()] == ["walk.safetensors"]
    loaded = load_motion_embeddings(path)
    assert list(loaded.layers) == [LAYER, other]
    assert (loaded.frames, loaded.pixel_hw, loaded.motion_module_version) == (5, (256, 384), "v3")
    assert loaded.metadata == {"source": "car.mp4"} and loaded.channel_layout == {LAYER: C, other: C}
    for name, layer in embeddings.layers.items():
        got = loaded.layers[name]
        assert got.token_hw == layer.token_hw and torch.equal(got.qk, layer.qk)
        assert (got.v is None and layer.v is None) or torch.equal(got.v, layer.v)


def test_loading_other_files_raises_naming_the_file(tmp_path) -> None:
    module_file = tmp_path / "mm_sd_v15_v2.safetensors"
    save_file({"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": torch.zeros(2, 2)}, str(module_file))
    with pytest.raises(Pix2GifInputError, match=r"mm_sd_v15_v2\.safetensors.*not a motion embedding.*proj_in"):
        load_motion_embeddings(module_file)
    garbage = tmp_path / "notes.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(Pix2GifInputError, match="notes.safetensors"):
        load_motion_embeddings(garbage)
    with pytest.raises(Pix2GifInputError, match="absent.safetensors"):
        load_motion_embeddings(tmp_path / "absent.safetensors")


def test_loading_tampered_embedding_files_raises(tmp_path) -> None:
    path = tmp_path / "e.safetensors"
    save_motion_embeddings(_embeddings({LAYER: _layer(5, (2, 2))}, 5), path)
    metadata = load_motion_embeddings(path)  # sanity: loads
    assert metadata.frames == 5
    base = {"format": FORMAT_TAG, "layers": f'["{LAYER}"]', "frames": "5", "pixel_hw": "[64, 64]",
            "token_hw": f'{{"{LAYER}": [2, 2]}}', "motion_module_version": "v2", "channels": f'{{"{LAYER}": {C}}}'}
    cases = [
        ({f"{LAYER}.qk": torch.zeros(1, 5, C), "extra.weight": torch.zeros(1)}, base, "extra.weight"),
        ({f"{LAYER}.v": torch.zeros(4, 5, C)}, base, "damaged"),
        ({f"{LAYER}.qk": torch.zeros(1, 4, C)}, base, "query/key embedding has shape"),
        ({f"{LAYER}.qk": torch.zeros(1, 5, C)}, {**base, "format": "pix2gif.motion_embeddings/9"}, "update the pack"),
        ({f"{LAYER}.qk": torch.full((1, 5, C), float("nan"))}, base, f"{LAYER}.qk hold NaN"),
    ]
    for tensors, meta, fragment in cases:
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(Pix2GifInputError, match=f"e.safetensors.*{fragment}"):
            load_motion_embeddings(path)


# ---- whole motion module: patch and training -------------------------------------------------------------------


def _module(seed: int = 0) -> MotionModule:
    torch.manual_seed(seed)
    module = MotionModule(C, pe_length=32)
    module.requires_grad_(False)
    return module


def test_patch_dispatches_per_attention_block() -> None:
    name = "down_blocks.2.motion_modules.1"
    module = _module()
    layer = _layer(4, (2, 2))
    embeddings = _embeddings({f"{name}.attention_blocks.1": LayerEmbedding(layer.qk.float(), layer.v.float(), (2, 2))}, 4)
    variant = MotionEmbeddingPatch(embeddings, {name: module}).variants((16, 16))[name]  # level 2: 4×4 tokens
    blocks = module.temporal_transformer.transformer_blocks[0].attention_blocks
    hidden = torch.randn(2 * 16, 4, C)
    pe = blocks[0].position_encoding(4, hidden)
    with torch.no_grad():
        assert torch.equal(variant(blocks[0], hidden, pe), global_temporal_attention(blocks[0], hidden, pe))
        direct = MotionEmbeddingAttention(embeddings.layers[f"{name}.attention_blocks.1"], (4, 4))
        assert torch.equal(variant(blocks[1], hidden, pe), direct(blocks[1], hidden, pe))
    with pytest.raises(Pix2GifInputError, match="does not exist"):
        MotionEmbeddingPatch(embeddings, {"down_blocks.2.motion_modules.0": module})


def test_training_step_updates_only_the_embeddings() -> None:
    name = "up_blocks.1.motion_modules.0"
    module = _module()
    specs = sd15_layer_specs({name: C}, (8, 12), [name])  # level 2 → 2×3 tokens
    embeddings = MotionEmbeddings.zeros(specs, 4, (64, 96), "v2")
    weights_before = {key: value.clone() for key, value in module.state_dict().items()}
    patch = MotionEmbeddingPatch(embeddings, {name: module})
    x = torch.randn(2 * 4, C, 2, 3)
    with torch.no_grad():
        plain = module(x, 4)
    out = module(x, 4, patch.variants((8, 12))[name])
    assert torch.equal(out, plain)  # zero initialisation: identical to the plain module
    out.square().mean().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in embeddings.parameters())
    assert all(p.grad is None for p in module.parameters())
    with torch.no_grad():  # a plain gradient step (torch.optim's first use costs seconds of imports)
        for tensor in embeddings.parameters():
            tensor -= 0.02 * tensor.grad
    assert all(float(p.detach().abs().sum()) > 0 for p in embeddings.parameters())
    assert all(torch.equal(value, weights_before[key]) for key, value in module.state_dict().items())
    with torch.no_grad():
        assert not torch.allclose(module(x, 4, patch.variants((8, 12))[name]), plain)


def test_saving_non_finite_embeddings_is_refused_and_writes_nothing(tmp_path) -> None:
    layer = _layer(5, (2, 2))
    broken = LayerEmbedding(torch.full_like(layer.qk, float("inf")), layer.v, layer.token_hw)
    diverged = _embeddings({LAYER: broken}, 5)
    with pytest.raises(Pix2GifInputError, match="NaN or infinite.*nothing was written"):
        save_motion_embeddings(diverged, tmp_path / "diverged.safetensors")
    assert list(tmp_path.iterdir()) == []
