"""The two training stages: what each may change, frozen BatchNorm, the end-to-end run and its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from inspectkit.engine.training import TrainConfig, train, weighted_cross_entropy
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
from inspectkit.model import blocks, build_model, set_trainable, train_mode

pytestmark = pytest.mark.slow

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _block_of(key: str, arch: str, n_blocks: int) -> int | None:
    """Index of the block a state_dict key belongs to (None for the head)."""
    if arch == "mobilenet_v2":
        return int(key.split(".")[1]) if key.startswith("features.") else None
    order = {"conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}
    return order.get(key.split(".")[0])


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("arch, k", [("mobilenet_v2", 3), ("mobilenet_v2", 1), ("resnet18", 1)])
def test_one_step_changes_only_the_last_blocks_and_the_head(arch, k):
    torch.manual_seed(0)
    model = build_model(arch, 2, weights=None)
    params = set_trainable(model, arch, k)
    before = {n: v.clone() for n, v in model.state_dict().items()}
    train_mode(model)
    opt = torch.optim.SGD(params, lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 80)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    changed = _changed(before, model.state_dict())
    n = len(blocks(model, arch))
    for key in changed:
        b = _block_of(key, arch, n)
        assert b is None or b >= n - k, f"{key} is in a frozen block but changed"
    frozen_bn = [key for key in before if key.endswith(BN_BUFFERS) and (_block_of(key, arch, n) or 0) < n - k
                 and _block_of(key, arch, n) is not None]
    assert frozen_bn and not set(frozen_bn) & changed  # frozen BatchNorm statistics did not move
    # the unfrozen blocks and the head did learn, and their BatchNorm statistics adapt
    assert any(_block_of(key, arch, n) is None for key in changed)
    assert any(key.endswith("running_mean") for key in changed)


@pytest.fixture(scope="module")
def initial_state():
    def make(seed):
        torch.manual_seed(seed)
        return {k: v.clone() for k, v in build_model("mobilenet_v2", 2, weights=None).state_dict().items()}
    return make


def _cfg(root, tmp_path, **kw):
    base = dict(data=str(root), weights="none", size=64, views=2, stage1_epochs=3, stage2_epochs=2,
                batch_size=16, patience=10, seed=3, out=str(tmp_path / "m.pt"), last_blocks=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("ema_epochs", [0.0, 0.5])
def test_stage1_changes_only_the_head(casting_tree, tmp_path, initial_state, ema_epochs):
    ckpt = train(_cfg(casting_tree, tmp_path, stage2_epochs=0, ema_epochs=ema_epochs))
    changed = _changed(initial_state(3), ckpt["state_dict"])
    assert changed and all(k.startswith("classifier.") for k in changed)
    assert [h["stage"] for h in ckpt["history"]] == ["stage1"] * 3


@pytest.mark.parametrize("ema_epochs, members", [(0.0, 1), (0.5, 1), (0.0, 2)])
def test_both_stages_change_only_last_blocks_and_head(casting_tree, tmp_path, initial_state, ema_epochs, members):
    ckpt = train(_cfg(casting_tree, tmp_path, ema_epochs=ema_epochs, members=members))
    changed = _changed(initial_state(3), ckpt["state_dict"])
    allowed = ("classifier.", "features.16.", "features.17.", "features.18.")
    assert all(k.startswith(allowed) for k in changed), sorted(k for k in changed if not k.startswith(allowed))
    stages = [h["stage"] for h in ckpt["history"]]
    assert stages.count("stage1") == 3 and stages.count("stage2") == 2 * members
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in ckpt["history"])


def test_checkpoint_from_training_is_complete_and_loads(casting_tree, tmp_path):
    cfg = _cfg(casting_tree, tmp_path, stage1_epochs=2, stage2_epochs=1)
    train(cfg)
    ckpt = load_checkpoint(cfg.out)
    assert ckpt["class_names"] == ["def_front", "ok_front"] and ckpt["defect_index"] == 0
    assert 0 < ckpt["threshold"] < 1
    assert ckpt["preprocessing"]["size"] == 64
    assert ckpt["train_config"]["seed"] == 3 and ckpt["train_config"]["last_blocks"] == 3
    assert ckpt["data"]["counts"] == {"def_front": 24, "ok_front": 24} and len(ckpt["data"]["files_sha256"]) == 64
    sweep = ckpt["metrics"]["validation_sweep"]
    assert [r["threshold"] for r in sweep][0] == 0.05 and [r["threshold"] for r in sweep][-1] == 0.95
    assert ckpt["versions"]["torch"].startswith("2.")
    assert model_from_checkpoint(ckpt)(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    # the needs-review band, derived on the same validation images as the threshold
    band = ckpt["review_band"]
    assert band["source"] == "validation" and band["threshold"] == ckpt["threshold"]
    assert 0 < band["low"] <= ckpt["threshold"] <= band["high"] < 1
    assert band["validation_n"] == ckpt["metrics"]["validation"]["n"]
    val = ckpt["metrics"]["validation"]
    assert band["validation_errors"] == val["missed_defects"] + val["false_alarms"]


def test_ema_keeps_an_average_not_the_last_weights(casting_tree, tmp_path):
    plain = train(_cfg(casting_tree, tmp_path / "plain", stage1_epochs=2, stage2_epochs=2))
    ema = train(_cfg(casting_tree, tmp_path / "ema", stage1_epochs=2, stage2_epochs=2, ema_epochs=2.0))
    head = "classifier.1.weight"
    assert not torch.equal(plain["state_dict"][head], ema["state_dict"][head])
    assert ema["train_config"]["ema_epochs"] == 2.0


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
def test_ema_update_moves_trained_weights_and_leaves_frozen_ones_exact(decay):
    from torch.optim.swa_utils import AveragedModel

    from inspectkit.engine.training import _ema_update

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))
    net[1].num_batches_tracked.fill_(12345)  # a frozen layer's count, which a float round trip could move
    for p in net[:2].parameters():
        p.requires_grad_(False)
    ema = AveragedModel(net, multi_avg_fn=_ema_update(decay), use_buffers=True)
    ema.update_parameters(net)  # the first update copies
    start = net[2].weight.detach().clone()
    with torch.no_grad():
        net[2].weight.add_(1.0)
    for _ in range(3):
        ema.update_parameters(net)
    avg = ema.module
    assert torch.equal(avg[0].weight, net[0].weight) and torch.equal(avg[1].running_var, net[1].running_var)
    assert int(avg[1].num_batches_tracked) == 12345
    # three steps towards a weight one higher: 1 - decay^3 of the way
    assert torch.allclose(avg[2].weight - start, torch.full_like(start, 1 - decay ** 3), atol=1e-6)


def test_soup_members_are_separate_runs_and_member_0_is_the_single_run(casting_tree, tmp_path):
    kw = dict(stage1_epochs=2, stage2_epochs=2)
    single = train(_cfg(casting_tree, tmp_path / "one", **kw))
    soup = train(_cfg(casting_tree, tmp_path / "soup", members=3, **kw))
    strip = lambda rows, m: [{k: v for k, v in r.items() if k != "seconds"} for r in rows
                             if r["stage"] == "stage2" and r["member"] == m]
    assert strip(soup["history"], 0) == strip(single["history"], 0)
    assert strip(soup["history"], 1) != strip(soup["history"], 0)  # own data order and views
    assert len(soup["metrics"]["stage2_members"]) == 3
    head = "classifier.1.weight"
    assert not torch.equal(single["state_dict"][head], soup["state_dict"][head])


def test_average_states_averages_what_differs_and_copies_what_is_shared():
    from inspectkit.engine.training import average_states

    frozen = torch.tensor([0.1, 0.7, 1e-8])
    a = {"w": torch.tensor([1.0, 2.0]), "frozen": frozen.clone(), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "frozen": frozen.clone(), "n": torch.tensor(9)}
    c = {"w": torch.tensor([2.0, 1.0]), "frozen": frozen.clone(), "n": torch.tensor(1)}
    out = average_states([a, b, c])
    assert torch.allclose(out["w"], torch.tensor([2.0, 3.0]))
    assert torch.equal(out["frozen"], frozen) and int(out["n"]) == 5
    assert average_states([a])["w"] is not a["w"]  # a copy, not the caller's tensor
    with pytest.raises(ValueError, match="at least one"):
        average_states([])


def test_training_chooses_the_threshold_set_threshold_would_choose(casting_tree, tmp_path):
    """The threshold and the validation report come from the scores the app computes (full precision, from the
    images, in the layout a loaded checkpoint has), not from the float16 feature cache: choosing again on the same
    split and target gives the same threshold to the last digit. (ResNet-18: a randomly initialised MobileNetV2
    gives every image the same score, which cannot tell the two apart.)"""
    from inspectkit.engine.evaluation import rethreshold

    ckpt = train(_cfg(casting_tree, tmp_path, arch="resnet18", last_blocks=1, stage1_epochs=2, stage2_epochs=1))
    again = rethreshold(load_checkpoint(tmp_path / "m.pt"), casting_tree)
    assert again["threshold"] == ckpt["threshold"]
    assert again["metrics"]["threshold_choice"] == ckpt["metrics"]["threshold_choice"]
    assert again["metrics"]["validation"] == ckpt["metrics"]["validation"]


def test_training_is_seeded(casting_tree, tmp_path):
    a = train(_cfg(casting_tree, tmp_path / "a", stage1_epochs=2, stage2_epochs=1))
    b = train(_cfg(casting_tree, tmp_path / "b", stage1_epochs=2, stage2_epochs=1))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("option, value, message", [
    ("--members", "0", "members must be at least 1 (one stage-2 run), got 0"),
    ("--ema-epochs", "-1", "ema_epochs must be >= 0 (0: no weight averaging), got -1.0"),
])
def test_train_cli_names_a_bad_averaging_option(casting_tree, option, value, message, capsys):
    import train as train_cli

    assert train_cli.main(["--data", str(casting_tree), "--weights", "none", "--no-eval", option, value]) == 2
    assert message in capsys.readouterr().err


def test_train_cli_reports_bad_data_folder(tmp_path, capsys):
    import train as train_cli

    assert train_cli.main(["--data", str(tmp_path / "nowhere"), "--weights", "none", "--no-eval"]) == 2
    assert "data folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("n, classes", [(6, 2), (9, 3)])
def test_weighted_cross_entropy_with_equal_weights_is_the_class_weighted_loss(n, classes):
    g = torch.Generator().manual_seed(n)
    logits, labels = torch.randn(n, classes, generator=g), torch.arange(n) % classes
    cw = torch.rand(classes, generator=g) + 0.5
    want = nn.CrossEntropyLoss(weight=cw)(logits, labels)
    for w in (1.0, 3.0):
        got = weighted_cross_entropy(logits, labels, cw, torch.full((n,), w))
        assert torch.allclose(got, want, atol=1e-6)


def test_weighted_cross_entropy_drops_an_image_of_weight_zero_and_counts_one_of_weight_two_twice():
    g = torch.Generator().manual_seed(1)
    logits, labels, cw = torch.randn(5, 2, generator=g), torch.tensor([0, 1, 1, 0, 1]), torch.tensor([2.0, 0.5])
    dropped = weighted_cross_entropy(logits, labels, cw, torch.tensor([1.0, 1, 1, 1, 0]))
    assert torch.allclose(dropped, nn.CrossEntropyLoss(weight=cw)(logits[:4], labels[:4]), atol=1e-6)
    doubled = weighted_cross_entropy(logits, labels, cw, torch.tensor([2.0, 1, 1, 1, 1]))
    rows = [0, 0, 1, 2, 3, 4]
    assert torch.allclose(doubled, nn.CrossEntropyLoss(weight=cw)(logits[rows], labels[rows]), atol=1e-6)
