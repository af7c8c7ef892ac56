"""Optional dependencies: the ``onnx`` and ``tensorboard`` extras (``pip install skiplab[...]``)."""

from __future__ import annotations


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed; the message names the extra that provides it.

    Also a ``ValueError``, so that the command line reports it as a usage error."""
