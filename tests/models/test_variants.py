"""skiplab.models.variants: every family's table is rows of one type, registered as they read."""

from __future__ import annotations

import pytest

from skiplab.models.densenet import DENSENET_VARIANTS
from skiplab.models.fpn import FPN_VARIANTS
from skiplab.models.highway import HIGHWAY_VARIANTS, HighwayCNN, HighwayMLP
from skiplab.models.resnet import RESNET_VARIANTS, ResNetConfig
from skiplab.models.transformer import TRANSFORMER_VARIANTS
from skiplab.models.unet import UNET_VARIANTS
from skiplab.models.variants import Variant, register_variants
from skiplab.registry import _REGISTRY, get_model_entry, list_models

TABLES = {
    "resnet": RESNET_VARIANTS,
    "densenet": DENSENET_VARIANTS,
    "unet": UNET_VARIANTS,
    "fpn": FPN_VARIANTS,
    "highway": HIGHWAY_VARIANTS,
    "transformer": TRANSFORMER_VARIANTS,
}


@pytest.mark.parametrize("module", TABLES)
def test_every_row_is_a_variant_registered_as_it_reads(module):
    for name, row in TABLES[module].items():
        assert isinstance(row, Variant), name
        entry = get_model_entry(name)
        assert (entry.family, entry.input_size, entry.task) == (
            row.family,
            row.input_size,
            row.task,
        ), name


def test_the_tables_hold_every_registered_name():
    names = [n for table in TABLES.values() for n in table]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(list_models())


def test_depths_from_the_config_or_the_row():
    assert get_model_entry("resnet56").depth == 56
    assert get_model_entry("densenet_bc100_k12").depth == 100
    assert get_model_entry("unet").depth == 23  # the row's; UNetConfig.depth counts levels
    assert get_model_entry("unet_resnet18").depth is None
    assert get_model_entry("fpn_resnet18").depth is None


def test_a_table_of_several_networks_builds_each_from_its_config_type():
    assert type(get_model_entry("highway_mlp").build(num_classes=3)) is HighwayMLP
    assert type(get_model_entry("highway_cifar19").build(num_classes=3)) is HighwayCNN


def test_a_row_depth_where_the_config_gives_it_is_refused():
    row = Variant("variants_test", (3, 32, 32), ResNetConfig("basic", (1, 1, 1, 1)), depth=10)
    with pytest.raises(ValueError, match="variants_test_net: depth comes from the config"):
        register_variants({"variants_test_net": row}, object, depth=lambda cfg: cfg.depth)
    assert "variants_test_net" not in list_models()


def test_a_registered_name_is_refused():
    row = Variant("variants_test", (3, 32, 32), ResNetConfig("basic", (1, 1, 1, 1)))
    with pytest.raises(ValueError, match="model 'resnet20' is already registered"):
        register_variants({"resnet20": row}, object)
    assert get_model_entry("resnet20").family == "cifar_resnet"
    assert "variants_test" not in {e.family for e in _REGISTRY.values()}
