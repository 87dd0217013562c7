"""load_backbone_state: every accepted checkpoint layout, arch detection, and clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from unimoco.pretrain.backbone import BackboneFormatError, load_backbone_state
from unimoco.pretrain.model.resnet import ARCHS, build_resnet


def _randomized(arch: str, cifar_stem: bool = False) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict with random values (shapes from a meta-device model)."""
    with torch.device("meta"):
        reference = build_resnet(arch, cifar_stem=cifar_stem).state_dict()
    generator = torch.Generator().manual_seed(0)
    return {k: torch.rand(v.shape, generator=generator).to(v.dtype) for k, v in reference.items()}


def _backbone_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _layouts(state: dict[str, torch.Tensor]) -> dict[str, tuple[object, str]]:
    """Checkpoint object -> the source_format it must be recognised as."""
    queue = {"queue": torch.randn(128, 8), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    ours = {f"encoder_q.{k}": v for k, v in state.items()}
    ours |= {f"encoder_k.{k}": v.clone() for k, v in state.items()}
    ours |= {"encoder_q.fc.0.weight": torch.randn(4, 4), "queue_labels": torch.zeros(128)} | queue
    official = {f"module.encoder_q.{k}": v for k, v in state.items()}
    official |= {f"module.encoder_k.{k}": v for k, v in state.items()}
    official |= {f"module.{k}": v for k, v in queue.items()}
    return {
        "ours": ({"model": ours, "step": 10, "config": "MODEL:\n  ARCH: x\n"}, "unimoco"),
        "official": ({"state_dict": official, "epoch": 200, "arch": "resnet50"}, "moco"),
        "torchvision": (state, "torchvision"),
        "torchvision-wrapped": (
            {"state_dict": {f"module.{k}": v for k, v in state.items()}},
            "torchvision",
        ),
        "torchvision-model": ({"model": _backbone_only(state)}, "torchvision"),
        # unimoco semisup's epoch checkpoint: the fine-tuned ResNet with its class head
        "semisup": ({"epoch": 3, "state": {"model": state, "optimizer": {}}}, "semisup"),
    }


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_every_layout_gives_the_torchvision_backbone(arch, tmp_path):
    state = _randomized(arch)
    for name, (obj, source) in _layouts(state).items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        loaded = load_backbone_state(path)
        assert (loaded.arch, loaded.cifar_stem, loaded.source_format) == (arch, False, source)
        assert loaded.state_dict.keys() == _backbone_only(state).keys()
        for key, value in loaded.state_dict.items():
            assert torch.equal(value, state[key]), (name, key)


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_is_detected_from_the_keys(arch, tmp_path):
    torch.save(_randomized(arch), tmp_path / "r.pth")
    assert load_backbone_state(tmp_path / "r.pth").arch == arch


def test_cifar_stem_is_detected(tmp_path):
    path = tmp_path / "cifar.pth"
    torch.save(
        {"model": {f"encoder_q.{k}": v for k, v in _randomized("resnet18", True).items()}}, path
    )
    loaded = load_backbone_state(path)
    assert (loaded.arch, loaded.cifar_stem) == ("resnet18", True)
    assert loaded.state_dict["conv1.weight"].shape == (64, 3, 3, 3)


def test_checkpoints_without_bn_counters_are_accepted(tmp_path):
    state = {k: v for k, v in _randomized("resnet50").items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    assert load_backbone_state(tmp_path / "old.pth").arch == "resnet50"


def test_missing_backbone_key_is_named(tmp_path):
    state = _randomized("resnet50")
    del state["layer3.4.bn2.running_var"]
    torch.save(
        {"state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}}, tmp_path / "m.pth"
    )
    with pytest.raises(BackboneFormatError, match=r"m\.pth.*missing.*layer3\.4\.bn2\.running_var"):
        load_backbone_state(tmp_path / "m.pth")


def test_extra_backbone_key_is_named(tmp_path):
    state = _randomized("resnet18") | {"layer2.0.attention.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(BackboneFormatError, match=r"x\.pth.*unexpected.*layer2\.0\.attention"):
        load_backbone_state(tmp_path / "x.pth")


def test_wrong_shape_is_named(tmp_path):
    state = _randomized("resnet18")
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(BackboneFormatError, match=r"layer1\.0\.conv1\.weight has shape"):
        load_backbone_state(tmp_path / "s.pth")


def test_non_resnet_checkpoint_lists_the_keys_seen(tmp_path):
    vit = {"model": {"patch_embed.proj.weight": torch.zeros(1)}, "optimizer": {}, "epoch": 3}
    torch.save(vit, tmp_path / "vit.pth")
    with pytest.raises(BackboneFormatError, match=r"vit\.pth: no ResNet.*model, optimizer, epoch"):
        load_backbone_state(tmp_path / "vit.pth")


def test_unknown_depth_is_reported(tmp_path):
    state = _randomized("resnet18")
    state |= {k.replace("layer1.1.", "layer1.2."): v for k, v in state.items() if "layer1.1." in k}
    torch.save(state, tmp_path / "r.pth")
    with pytest.raises(BackboneFormatError, match=r"blocks per layer \[3, 2, 2, 2\]"):
        load_backbone_state(tmp_path / "r.pth")


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": _randomized("resnet18"), "extra": _RunsCode()}, "evil.pth")
    with pytest.raises(BackboneFormatError, match=r"evil\.pth: refused by .*weights_only=True"):
        load_backbone_state("evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_wrong_file_types_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with open(tmp_path / "weights.pkl", "wb") as f:  # a detectron2-style plain pickle
        pickle.dump({"model": {"stem.conv1.weight": [1.0]}, "__author__": "x"}, f)
    with pytest.raises(BackboneFormatError, match=r"notes\.txt: not a PyTorch checkpoint"):
        load_backbone_state(tmp_path / "notes.txt")
    with pytest.raises(BackboneFormatError, match=r"weights\.pkl: refused"):
        load_backbone_state(tmp_path / "weights.pkl")
    with pytest.raises(BackboneFormatError, match=r"nothing\.pth: no such file"):
        load_backbone_state(tmp_path / "nothing.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(BackboneFormatError, match=r"list\.pth: expected a dict"):
        load_backbone_state(tmp_path / "list.pth")
