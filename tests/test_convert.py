"""unimoco convert: exact transfer of torchvision / MoCo ResNets into detectron2, and the CLI."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import build_resnet_backbone

import unimoco.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from unimoco import cli
from unimoco.pretrain.backbone import backbone_from_checkpoint
from unimoco.pretrain.model.resnet import build_resnet
from unimoco.transfer.checkpoint import SafeDetectionCheckpointer
from unimoco.transfer.config import load_detection_cfg
from unimoco.transfer.convert import main, to_detectron2
from unimoco.transfer.files import UnsafePickleError, load_numpy_pickle

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"
# A config of each depth whose backbone outputs res2-res5 (FPN), in plain BN for one process.
FPN_CONFIG = {"resnet18": "shapes_voc_R_18_FPN.yaml", "resnet50": "coco_R_50_FPN_1x.yaml"}
BN = [
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.FPN.NORM",
    "BN",
    "MODEL.ROI_BOX_HEAD.NORM",
    "BN",
    "MODEL.ROI_MASK_HEAD.NORM",
    "BN",
    "MODEL.DEVICE",
    "cpu",
]


def _torchvision(arch: str, cifar_stem: bool = False) -> torch.nn.Module:
    """A random torchvision ResNet whose BN layers have non-trivial statistics and affine terms."""
    torch.manual_seed(0)
    model = build_resnet(arch, cifar_stem=cifar_stem)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _moco_checkpoint(model: torch.nn.Module) -> dict:
    """The official MoCo / UniMoCo layout: query and key encoders, MLP head, queue."""
    state = {f"module.encoder_q.{k}": v for k, v in model.state_dict().items()}
    state |= {f"module.encoder_k.{k}": v.clone() for k, v in model.state_dict().items()}
    state |= {"module.encoder_q.fc.2.weight": torch.randn(128, 8), "module.queue": torch.randn(4)}
    return {"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}


def _torchvision_features(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    features = {}
    for stage, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), 2):
        x = layer(x)
        features[f"res{stage}"] = x
    return features


def _load_reporting(model: torch.nn.Module, path: Path):
    """Load ``path`` with detectron2's checkpointer and return the incompatible keys it reports."""
    checkpointer = SafeDetectionCheckpointer(model)
    return checkpointer._load_model(checkpointer._load_file(str(path)))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("layout", ["torchvision", "moco"])
def test_conversion_is_exact(arch, layout, tmp_path, capsys):
    model = _torchvision(arch)
    checkpoint = model.state_dict() if layout == "torchvision" else _moco_checkpoint(model)
    torch.save(checkpoint, tmp_path / "in.pth")
    assert main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")]) == 0
    source = "torchvision" if layout == "torchvision" else "moco"
    assert f"({source}): {arch} -> " in capsys.readouterr().out

    cfg = load_detection_cfg(str(CONFIGS / FPN_CONFIG[arch]), BN)
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    incompatible = _load_reporting(backbone, tmp_path / "out.pkl")
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []

    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = _torchvision_features(model, x)
        actual = backbone(x)
    assert sorted(actual) == ["res2", "res3", "res4", "res5"]
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("config", ["voc_R_50_C4_24k.yaml", "coco_R_50_FPN_1x.yaml"])
def test_pickle_fills_every_backbone_weight_of_c4_and_fpn_models(config, tmp_path):
    model = _torchvision("resnet50")
    torch.save(_moco_checkpoint(model), tmp_path / "moco.pth.tar")
    assert main([str(tmp_path / "moco.pth.tar"), str(tmp_path / "r50.pkl")]) == 0

    detector = build_model(load_detection_cfg(str(CONFIGS / config), BN))
    incompatible = _load_reporting(detector, tmp_path / "r50.pkl")
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    backbone_prefixes = ("backbone.stem.", "backbone.res", "backbone.bottom_up.")
    missing_backbone = [
        key
        for key in incompatible.missing_keys
        if key.startswith(backbone_prefixes)
        or key.startswith("roi_heads.res5.")
        and not key.startswith("roi_heads.res5.norm.")
    ]
    assert missing_backbone == []
    # res5 lives in the ROI head of a C4 model, in the backbone of an FPN one.
    res5 = detector.roi_heads.res5 if "C4" in config else detector.backbone.bottom_up.res5
    torch.testing.assert_close(res5[2].conv3.weight, model.layer4[2].conv3.weight)
    torch.testing.assert_close(
        res5[0].shortcut.norm.running_var, model.layer4[0].downsample[1].running_var
    )


def test_pickle_layout(tmp_path):
    torch.save(_torchvision("resnet18").state_dict(), tmp_path / "r18.pth")
    assert main([str(tmp_path / "r18.pth"), str(tmp_path / "r18.pkl")]) == 0
    with open(tmp_path / "r18.pkl", "rb") as f:
        data = load_numpy_pickle(f)
    assert set(data) == {"model", "__author__", "matching_heuristics"}
    assert data["matching_heuristics"] is True
    weights = data["model"]
    assert weights["stem.conv1.norm.running_var"].dtype.name == "float32"
    assert {
        "stem.conv1.weight",
        "res2.0.conv1.norm.bias",
        "res3.0.shortcut.norm.weight",
        "res5.1.conv2.weight",
    } <= set(weights)
    assert not any(k.startswith("fc") or "num_batches_tracked" in k for k in weights)
    assert len(weights) == 100  # 20 convs x 1 + 20 norms x 4 (R18 incl. shortcuts)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_torchvision_output_loads_back(tmp_path, capsys):
    model = _torchvision("resnet50")
    torch.save(_moco_checkpoint(model), tmp_path / "moco.pth.tar")
    assert main([str(tmp_path / "moco.pth.tar"), str(tmp_path / "r50.pth")]) == 0
    summary = capsys.readouterr().out
    assert f"-> {tmp_path / 'r50.pth'} (torchvision), 318 tensors" in summary
    fresh = build_resnet("resnet50")
    result = fresh.load_state_dict(
        torch.load(tmp_path / "r50.pth", weights_only=True), strict=False
    )
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    torch.testing.assert_close(fresh.layer3[5].bn3.running_mean, model.layer3[5].bn3.running_mean)


def test_cli_dispatch_and_explicit_format(tmp_path):
    torch.save(_torchvision("resnet18").state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "weights.bin"
    assert cli.main(["convert", str(tmp_path / "r18.pth"), str(out), "--to", "detectron2"]) == 0
    with open(out, "rb") as f:
        assert "res4.1.conv2.weight" in load_numpy_pickle(f)["model"]


def test_unknown_suffix_and_overwriting_the_input_are_refused(tmp_path, capsys):
    source = tmp_path / "r18.pth"
    torch.save(_torchvision("resnet18").state_dict(), source)
    with pytest.raises(SystemExit):
        main([str(source), str(tmp_path / "out.bin")])
    assert "cannot tell the format from the output suffix '.bin'" in capsys.readouterr().err
    before = source.read_bytes()
    with pytest.raises(SystemExit):
        main([str(source), str(source)])
    assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_non_resnet_input_fails_without_output(tmp_path, capsys):
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(2)}}, tmp_path / "vit.pth")
    assert main([str(tmp_path / "vit.pth"), str(tmp_path / "out.pkl")]) == 1
    err = capsys.readouterr().err
    assert "vit.pth: no ResNet backbone found" in err and "model" in err
    assert not (tmp_path / "out.pkl").exists()


def test_cifar_stem_goes_to_torchvision_only(tmp_path, capsys):
    model = _torchvision("resnet18", cifar_stem=True)
    torch.save(
        {"model": {f"encoder_q.{k}": v for k, v in model.state_dict().items()}},
        tmp_path / "cifar.pth",
    )
    assert main([str(tmp_path / "cifar.pth"), str(tmp_path / "out.pkl")]) == 1
    assert "CIFAR stem" in capsys.readouterr().err
    assert main([str(tmp_path / "cifar.pth"), str(tmp_path / "out.pth")]) == 0


def test_detectron2_names():
    names = to_detectron2(backbone_from_checkpoint(_torchvision("resnet50").state_dict()))
    assert "res2.0.shortcut.norm.running_mean" in names  # layer1.0.downsample.1.running_mean
    assert "res4.5.conv3.norm.weight" in names  # layer3.5.bn3.weight
    assert "stem.conv1.norm.bias" in names  # bn1.bias


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_detectron2_pickles_that_would_run_code_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": _RunsCode()}, f)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to unpickle builtins\.exec"):
        _load_reporting(torch.nn.Linear(1, 1), Path("evil.pkl"))
    assert not (tmp_path / "PWNED").exists()
