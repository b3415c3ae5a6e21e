"""Batch norm in D fed three ways (norm.d_batches): what each update's D sees."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ganlab.assemble import build_gan
from ganlab.config import D_BATCHES, ConfigError
from ganlab.configure import check, load_config

BN_D = ["data=ring8", "model=mlp", "norm.d=batch", "train.batch_size=16", "seed=5"]


def _gan(make_cfg, *overrides):
    gan = build_gan(make_cfg(*overrides), torch.device("cpu"))
    gan.G.train()
    gan.D.train()
    return gan


def _views(gan):
    """(G's cost, G's cost computed from the logits D's update gave the same fakes), on one
    real batch and one z."""
    real, _ = gan.data.sample(gan.batch_size)
    z = gan.sample_z(gan.batch_size)
    _, d_stats = gan.d_cost(gan.G, gan.D, real, None, z, None)
    g_total, _ = gan.g_cost(gan.G, gan.D, z, None, draw_real=lambda: (real, None))
    as_in_d = gan.loss.g_loss(d_stats["fake_logits"]).total
    return g_total.detach(), as_in_d


@pytest.mark.parametrize("mode, consistent", [("separate", True), ("joint", True),
                                              ("joint_inconsistent", False)])
def test_g_is_scored_on_fakes_as_d_was_trained_on_them_except_in_the_inconsistent_mode(
        make_cfg, mode, consistent):
    gan = _gan(make_cfg, *BN_D, f"norm.d_batches={mode}")
    g_cost, as_in_d = _views(gan)
    if consistent:
        torch.testing.assert_close(g_cost, as_in_d)
    else:  # fakes alone are normalised by their own statistics, not the joint batch's
        assert (g_cost - as_in_d).abs() > 1e-3


def test_d_update_sees_two_batches_or_one_joint_batch(make_cfg):
    real, fake = torch.randn(16, 2), torch.randn(16, 2) + 3.0
    for mode in D_BATCHES:
        gan = _gan(make_cfg, *BN_D, f"norm.d_batches={mode}")
        with torch.no_grad():
            out_real, out_fake = gan.discriminate(gan.D, real, None, fake, None)
            alone = gan.D(real).adv, gan.D(fake).adv
            joint = gan.D(torch.cat([real, fake])).adv
        expected = alone if mode == "separate" else (joint[:16], joint[16:])
        torch.testing.assert_close(out_real.adv, expected[0])
        torch.testing.assert_close(out_fake.adv, expected[1])
        assert (joint[16:] - alone[1]).abs().max() > 1e-3  # the modes do differ here


def test_the_joint_mode_draws_a_real_batch_for_each_g_update(make_cfg):
    images = {}
    for mode in D_BATCHES:
        gan = _gan(make_cfg, *BN_D, f"norm.d_batches={mode}", "train.d_steps=2",
                   "train.g_steps=3")
        gan.train_step()
        images[mode] = gan.round_images
    assert images == {"separate": 2 * 16, "joint": (2 + 3) * 16, "joint_inconsistent": 2 * 16}


def test_without_batch_statistics_in_d_the_modes_train_the_same_weights(make_cfg):
    # norm in G only: D sees no batch, so the three modes are one computation (D takes real
    # and fake in one call, G's update fakes alone) and give the same weights bit for bit
    states = []
    for mode in D_BATCHES:
        gan = _gan(make_cfg, "norm.g=batch", "norm.d=none", "train.batch_size=16",
                   f"norm.d_batches={mode}")
        assert gan.joint_d and not gan.joint_g
        for _ in range(5):
            gan.train_step()
        states.append({**gan.G.state_dict(), **gan.D.state_dict()})
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_an_unknown_mode_names_the_key_and_the_choices(make_cfg):
    with pytest.raises(ConfigError, match="norm.d_batches='split' is not allowed; choose one "
                                          "of: separate, joint, joint_inconsistent"):
        check(make_cfg("norm.d_batches=split"))


@pytest.mark.parametrize("split, mode", [(True, "separate"), (False, "joint_inconsistent")])
def test_a_config_saved_with_the_old_key_reruns_what_it_ran(make_cfg, tmp_path, split, mode):
    saved = OmegaConf.to_container(make_cfg(*BN_D))
    del saved["norm"]["d_batches"]
    saved["norm"]["split_real_fake"] = split
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(saved), tmp_path / ".hydra" / "config.yaml")
    cfg = load_config(tmp_path, [])
    assert cfg.norm.d_batches == mode and "split_real_fake" not in cfg.norm
    assert load_config(tmp_path, ["norm.d_batches=joint"]).norm.d_batches == "joint"
