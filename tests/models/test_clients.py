"""Clients that no one here wrote: torch.fx (torchvision's feature extraction) on every family,
and torchvision's Faster R-CNN on the FPN family's detection backbone."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.fx import symbolic_trace
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor

from skiplab import create_model, get_model_entry, list_models
from skiplab.models.fpn import FPNBackbone


def _smallest_per_family() -> list[str]:
    first: dict[str, str] = {}
    for name in list_models():  # natural order: the shallowest net of each family first
        first.setdefault(get_model_entry(name).family, name)
    return sorted(first.values())


def _small_input(name: str) -> torch.Tensor:
    entry = get_model_entry(name)
    if entry.task == "language_modeling":  # token ids (B, T)
        return torch.randint(0, 10, (2, 16))
    c, h, w = entry.input_size
    if entry.family not in ("highway",):  # highway nets need exactly their input size
        h = w = 64 if entry.task == "segmentation" else 32
    if name == "unet_original":
        h = w = 188  # the smallest size its unpadded convolutions accept
    return torch.randn(2, c, h, w)


@pytest.mark.parametrize("name", _smallest_per_family())
def test_fx_trace_matches_eager(name):
    model = create_model(name).eval()
    x = _small_input(name)
    graph = symbolic_trace(model)  # the input checks step aside for a Proxy
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=0, atol=0)
    # ... and still run in eager mode.
    bad = x[0] if x.ndim == 2 else torch.randn(2, x.shape[1] + 1, *x.shape[2:])
    with pytest.raises(ValueError, match="expects input of shape"):
        model(bad)


def test_issue_example_resnet50_feature_extractor():
    model = create_model("resnet50").eval()
    extractor = create_feature_extractor(model, {"layer4": "c5"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c5 = extractor(x)["c5"]
        torch.testing.assert_close(c5, model.forward_intermediates(x)[-1], rtol=0, atol=0)
    assert c5.shape == (1, 2048, 2, 2)


def test_fpn_detection_backbone_has_the_form_of_torchvision_backbone_with_fpn():
    model = create_model("fpn_resnet18").eval()
    backbone = model.detection_backbone()
    assert isinstance(backbone, FPNBackbone) and backbone.out_channels == 256
    assert backbone.body is model.encoder and backbone.fpn is model.neck  # shared, not copied
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert isinstance(out, OrderedDict) and list(out) == ["0", "1", "2", "3", "pool"]
    # torchvision's reference: the same keys, channels and sizes.
    tv = BackboneWithFPN(
        torch.nn.Sequential(), {}, in_channels_list=[64, 128, 256, 512], out_channels=256
    )
    assert tv.out_channels == backbone.out_channels
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 256, 16, 24),
        (1, 256, 8, 12),
        (1, 256, 4, 6),
        (1, 256, 2, 3),
        (1, 256, 1, 2),
    ]
    # The neck's weights load into torchvision's FPN of BackboneWithFPN, key for key.
    tv.fpn.load_state_dict(backbone.fpn.state_dict(), strict=True)
    with pytest.raises(ValueError, match="expects input of shape"):
        backbone(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="W=80 must be a multiple of 32.*64 and 96"):
        backbone(torch.randn(1, 3, 64, 80))


def test_faster_rcnn_on_the_fpn_backbone_infers_and_trains():
    torch.manual_seed(0)
    backbone = create_model("fpn_resnet18", pyramid_channels=64).detection_backbone()
    detector = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=128)
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "labels", "scores"}

    detector.train()
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    conv1 = backbone.body.conv1.weight.grad
    assert conv1 is not None and conv1.abs().sum() > 0  # the loss reaches the skiplab backbone
    assert backbone.fpn.inner_blocks["0"][0].weight.grad.abs().sum() > 0
