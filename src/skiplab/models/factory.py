"""``create_model``: a registered network by name, with its published weights if asked.

It lives here, beside the families and their weights (:mod:`skiplab.models.pretrained`), not in
:mod:`skiplab.registry`, so that the registry is a table that knows nothing of the models.
``skiplab.create_model`` is this function.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from skiplab.models.pretrained import fetch_pretrained, get_pretrained_cfg, load_pretrained
from skiplab.registry import get_model_entry


def create_model(name: str, pretrained: bool | str | Path = False, **overrides) -> nn.Module:
    """Build a registered model, passing ``overrides`` (num_classes, shortcut, ...) through.

    Args:
        name: Registered model name (see :func:`skiplab.list_models`).
        pretrained: False (random initialisation); True: the model's published weights
            (``model.pretrained_cfg``), downloaded into the cache and verified against their
            SHA-256; or the path of a weights file, loaded with
            :func:`skiplab.models.load_pretrained`. With another ``num_classes`` than the
            weights', the classifier is replaced (``reset_classifier``) after loading.
        overrides: Options of the model family.

    The model's ``pretrained_cfg`` attribute is the dict of its
    :class:`~skiplab.models.pretrained.PretrainedCfg` (None when it has no published weights).

    Raises:
        KeyError: for an unknown name.
        ValueError: for ``pretrained=True`` without published weights or a known SHA-256, or
            weights that do not fit the model.

    Example:
        >>> model = create_model("resnet20", num_classes=100, shortcut="B")
        >>> model = create_model("resnet56", pretrained=True)  # CIFAR-10 weights
    """
    entry = get_model_entry(name)
    cfg = get_pretrained_cfg(name)
    if not pretrained:
        model = entry.build(**overrides)
    else:
        if not isinstance(pretrained, (bool, str, Path)):
            raise ValueError(f"pretrained must be a bool or a path; got {pretrained!r}")
        path = fetch_pretrained(name) if pretrained is True else Path(pretrained)
        num_classes = overrides.get("num_classes")
        if cfg is not None and num_classes is not None:
            overrides = {**overrides, "num_classes": cfg.num_classes}
        model = entry.build(**overrides)
        load_pretrained(model, path)
        if num_classes is not None and cfg is not None and num_classes != cfg.num_classes:
            model.reset_classifier(num_classes)
    model.pretrained_cfg = None if cfg is None else cfg.to_dict()
    return model
