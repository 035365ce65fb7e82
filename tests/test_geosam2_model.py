"""GeoSAM2 model: structure and names of the released checkpoint, strict loading, LoRA/fusion
identity at initialisation, ring order and memory wrap-around.

Test-only setting: the model is built at image_size 128 (the release runs at 1024) so that the
two Hiera-B+ encoders run in seconds on a CPU; the parameters do not depend on the image size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segparts.engines.geosam2.model import (
    SAM2_CONFIG,
    CheckpointError,
    GeoSAM2Model,
    LoRAQKV,
    RingFrames,
    build_model,
    check_state_dict,
    load_checkpoint,
)
from segparts.engines.geosam2.predictor import MultiViewPredictor, Prompt, memory_frames, pointer_frames, ring_order

SIZE = 128  # test-only image size


@pytest.fixture(scope="module")
def model() -> GeoSAM2Model:
    torch.manual_seed(0)
    return build_model(SIZE)


def test_parameter_names_and_counts_match_the_release(model):
    sd = model.state_dict()
    assert len(sd) == 1119
    n_params = sum(p.numel() for p in model.parameters())
    assert 153_000_000 < n_params < 155_000_000
    for enc in ("image_encoder", "pos_map_encoder"):
        for i in (0, 2, 5, 21, 23):
            base = f"{enc}.trunk.blocks.{i}.attn.qkv"
            for name in (
                "qkv.weight",
                "qkv.bias",
                "linear_a_q.weight",
                "linear_b_q.weight",
                "linear_a_v.weight",
                "linear_b_v.weight",
            ):
                assert f"{base}.{name}" in sd
            assert f"{base}.weight" not in sd  # the original linear moved one level down
        assert f"{enc}.neck.convs.0.conv.weight" in sd
    for level in ("high", "mid", "low"):
        assert sd[f"feature_fusion.fusion_{level}.weight"].shape == (256, 512, 3, 3)
    # stage transitions: qkv maps d_in to 3 * 2 * d_in, LoRA stays d_in wide
    qkv = model.image_encoder.trunk.blocks[2].attn.qkv
    assert (qkv.qkv.in_features, qkv.qkv.out_features, qkv.linear_b_q.out_features) == (112, 672, 112)
    assert model.pos_map_encoder.trunk.blocks[23].drop_path.drop_prob == pytest.approx(0.1)


def test_lora_updates_start_of_q_and_end_of_v_only():
    torch.manual_seed(1)
    base = torch.nn.Linear(8, 48)  # a stage transition: d_out = 2 * d_in
    lora = LoRAQKV(base)
    x = torch.randn(2, 3, 3, 8)
    assert torch.equal(lora(x), base(x))  # B = 0 at init
    torch.nn.init.normal_(lora.linear_b_q.weight)
    torch.nn.init.normal_(lora.linear_b_v.weight)
    diff = (lora(x) - base(x)).abs().amax(dim=(0, 1, 2))
    assert (diff[:8] > 0).all() and (diff[-8:] > 0).all()
    assert (diff[8:-8] == 0).all()  # rest of q, all of k, start of v untouched


def test_zero_init_lora_and_fusion_reproduce_plain_sam2(model):
    from sam2.build_sam import build_sam2

    plain = build_sam2(SAM2_CONFIG, None, device="cpu")
    # same base weights in both: plain SAM2's encoder and decoder projections copied into ours
    ours = {k.replace(".attn.qkv.qkv.", ".attn.qkv."): v for k, v in model.state_dict().items()}
    plain.load_state_dict({k: ours[k] for k in plain.state_dict()})
    torch.manual_seed(2)
    normal, point = torch.randn(1, 3, SIZE, SIZE), torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    with torch.inference_mode():
        got, want = model.forward_image(normal, point), plain.forward_image(normal)
    for g, w in zip(got["backbone_fpn"], want["backbone_fpn"]):
        assert torch.equal(g, w)
    assert torch.equal(got["vision_features"], want["vision_features"])
    # the point map does reach the features once the fusion is trained (non-zero)
    conv = model.feature_fusion.fusion_low
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.normal_(std=1e-3)
        with torch.inference_mode():
            changed = model.forward_image(normal, point)["vision_features"]
        assert not torch.equal(changed, want["vision_features"])
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)


def test_loads_bf16_checkpoint_with_release_key_names(model, tmp_path):
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = tmp_path / "geosam2-bf16.pt"
    torch.save({"model": state}, path)
    target = model.feature_fusion.fusion_mid.weight
    with torch.no_grad():
        target.fill_(7.0)
    report = load_checkpoint(model, path)
    assert report.ok
    assert torch.equal(target, state["feature_fusion.fusion_mid.weight"].float())
    lora_b = model.pos_map_encoder.trunk.blocks[3].attn.qkv.linear_b_v.weight
    assert torch.equal(lora_b, state["pos_map_encoder.trunk.blocks.3.attn.qkv.linear_b_v.weight"].float())


def test_rejects_mismatched_checkpoint_listing_every_problem(model, tmp_path):
    state = dict(model.state_dict())
    del state["pos_map_encoder.trunk.blocks.7.attn.qkv.linear_a_q.weight"]
    state["image_encoder.trunk.blocks.0.attn.qkv.weight"] = torch.zeros(336, 112)  # plain SAM2 name
    state["feature_fusion.fusion_high.weight"] = torch.zeros(256, 256, 3, 3)
    report = check_state_dict(model, state)
    assert report.missing == ["pos_map_encoder.trunk.blocks.7.attn.qkv.linear_a_q.weight"]
    assert report.unexpected == ["image_encoder.trunk.blocks.0.attn.qkv.weight"]
    assert report.mismatched == ["feature_fusion.fusion_high.weight: (256, 256, 3, 3) vs (256, 512, 3, 3)"]
    small = tmp_path / "plain.pt"
    torch.save({"model": {"image_encoder.trunk.blocks.0.attn.qkv.weight": torch.zeros(336, 112)}}, small)
    with pytest.raises(CheckpointError, match=r"1119 missing.*1 unexpected"):
        load_checkpoint(model, small)
    torch.save({"weights": {}}, small)
    with pytest.raises(CheckpointError, match='"model"'):
        load_checkpoint(model, small)


def test_ring_order_duplicates_the_prompted_view():
    assert ring_order(0, 12) == [(0, 0)] + [(k + 1, k) for k in range(12)]
    order = ring_order(5, 12)
    assert [v for _, v in order] == [5, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4]
    assert [f for f, _ in order] == [5, 6, 7, 8, 9, 10, 11, 12, 0, 1, 2, 3, 4]
    assert sorted(f for f, _ in order) == list(range(13))  # each memory slot once
    with pytest.raises(ValueError):
        ring_order(12, 12)


def test_memory_looks_back_around_the_ring_but_pointers_do_not():
    assert memory_frames(1, 13) == [8, 9, 10, 11, 12, 0]
    assert memory_frames(9, 13) == [3, 4, 5, 6, 7, 8]
    assert pointer_frames(1, 13) == [0]
    assert pointer_frames(4, 13) == [3, 2, 1, 0]
    frames = RingFrames({12: "last"}, 13)
    assert frames.get(-1) == "last" and frames.get(12) == "last" and frames.get(0) is None


def test_model_reads_wrapped_memory(model):
    """Frame 1's memory attention sees an output stored at frame 12 (wrapped) but not at frame 5."""
    torch.manual_seed(3)
    pred = MultiViewPredictor(model, torch.randn(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE))
    cond = pred.prompt(0, Prompt(np.array([[40.0, 50.0]]), np.array([1])))
    other = pred.prompt(1, Prompt(np.array([[90.0, 20.0]]), np.array([1])), frame_idx=12)
    vision, pos, sizes = pred._frame(1, 1)

    def features(non_cond: dict):
        with torch.inference_mode():
            return model._prepare_memory_conditioned_features(
                1,
                False,
                vision[-1:],
                pos[-1:],
                sizes[-1:],
                {"cond_frame_outputs": {0: cond}, "non_cond_frame_outputs": non_cond},
                13,
            )

    alone = features({})
    assert not torch.allclose(features({12: other}), alone)  # 1 - 2 wraps to 12
    assert torch.equal(features({5: other}), alone)  # outside the 6-frame look-back
