"""torch.hub entry points: one per registered skiplab model.

    model = torch.hub.load("path/to/skiplab", "resnet56", source="local", pretrained=True)
    torch.hub.list("path/to/skiplab", source="local")

Each entry point is ``skiplab.create_model(name, pretrained=..., **kwargs)``: ``pretrained``
is False, True (the published weights, verified against their SHA-256) or a weights file.
This checkout's ``src`` folder goes first on ``sys.path``, so its code is used rather than an
installed skiplab (unless skiplab was imported before).
"""

import sys
from pathlib import Path

dependencies = ["torch", "numpy", "tqdm", "safetensors"]

_SRC = str(Path(__file__).resolve().parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from skiplab import create_model as _create_model  # noqa: E402
from skiplab import get_model_entry as _get_model_entry  # noqa: E402
from skiplab import list_models as _list_models  # noqa: E402


def _entry_point(name: str):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    e = _get_model_entry(name)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"skiplab {name} ({e.family}, {e.task}, input {e.input_size}): "
        f"skiplab.create_model({name!r}, pretrained=..., **kwargs)."
    )
    return entry


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
