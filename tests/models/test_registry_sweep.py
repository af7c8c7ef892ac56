"""Registry-wide sweep (timm style): every name in ``list_models()`` goes through the
:class:`ModelTester` battery (build, forward and backward, the common interface, clear errors).

The family testers already run it on their names at small inputs, and ``test_resnet``'s
heavy-net test covers the biggest ResNets, so nothing runs twice: this module runs the battery,
at the registered input size, only on the names no family claims (none today; a new family
without a tester lands here), and checks that the registered input size of every claimed name
is accepted by its model (in the testers' own builds, in
``ModelTester.test_wrong_channels_raise_before_compute``).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import torch
from torch import nn

from skiplab import get_model_entry, list_models
from skiplab.models import SkipNet
from skiplab.models._base import FeatureInfo
from skiplab.registry import _REGISTRY, register_model

from .model_tester import ModelTester


def claimed_names() -> set[str]:
    """Names that a family's tests run: every ModelTester subclass's ``names`` in tests/models,
    and the heavy ResNets of ``test_resnet.test_heavy_nets_forward_backward``."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("test_"):
            importlib.import_module(f"{__package__}.{info.name}")
    claimed: set[str] = set()
    stack = list(ModelTester.__subclasses__())
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        if cls is not TestUnclaimedModels:
            claimed.update(cls.names)
    from .test_resnet import HEAVY

    return claimed | set(HEAVY)


def unclaimed_names() -> list[str]:
    claimed = claimed_names()
    return [n for n in list_models() if n not in claimed]


class TestUnclaimedModels(ModelTester):
    """The battery at the registered input size (batch 2) for names no family tester runs."""

    names = ()  # filled below, once every tester class exists

    def make_input(self, name: str) -> torch.Tensor:
        return torch.randn(2, *get_model_entry(name).input_size)

    def expected_output_shape(self, model, x):
        if get_model_entry(model.model_name).task == "segmentation":
            return (x.shape[0], model.num_classes, *x.shape[-2:])
        return (x.shape[0], model.num_classes)


TestUnclaimedModels.names = tuple(unclaimed_names())


def pytest_generate_tests(metafunc):
    # conftest parametrises a tester by its names; with none unclaimed the battery is an empty
    # parameter set (reported as skipped), not a missing fixture.
    if metafunc.cls is TestUnclaimedModels and not metafunc.cls.names:
        metafunc.parametrize("name", [])


def test_every_registered_name_is_swept():
    swept = claimed_names() | set(TestUnclaimedModels.names)
    assert set(list_models()) <= swept
    # No tester names a model that is not registered (a renamed model would escape the sweep).
    assert swept <= set(list_models()), sorted(swept - set(list_models()))


class _TinyNet(SkipNet):
    """A made-up family with no tester, to prove that the sweep picks a new name up."""

    def __init__(self, num_classes: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.model_name, self.in_chans, self.num_classes = "sweep_tinynet", in_chans, num_classes
        self.stem = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.num_features = 8
        self.feature_info = [FeatureInfo("stem", 8, 2), FeatureInfo("block", 8, 2)]

    def forward_intermediates(self, x):
        self.check_input(x)
        a = self.stem(x)
        return [a, a + self.block(a)]

    def forward_features(self, x):
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))

    def iter_blocks(self):
        yield "block", self.block

    def get_classifier(self):
        return self.fc


@pytest.fixture
def tiny_family():
    register_model("sweep_tinynet", family="sweep_test", input_size=(3, 16, 16))(_TinyNet)
    yield "sweep_tinynet"
    _REGISTRY.pop("sweep_tinynet")


def test_a_new_family_without_a_tester_is_swept(tiny_family):
    assert unclaimed_names() == [tiny_family]
    tester = TestUnclaimedModels()
    for test in (
        tester.test_registered,
        tester.test_forward_backward,
        tester.test_interface,
        tester.test_reset_classifier,
        tester.test_wrong_channels_raise_before_compute,
    ):
        test(tiny_family)
