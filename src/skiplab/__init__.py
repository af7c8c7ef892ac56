"""skiplab: skip-connection networks, trained on real data, with the analyses of the chapter."""

# Importing skiplab.models registers every family, so the registry is complete from here on.
from skiplab.models import create_model, get_model_entry, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "get_model_entry", "list_models", "register_model", "__version__"]
