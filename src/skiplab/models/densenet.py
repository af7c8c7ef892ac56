"""densenet family (being written; registers nothing yet)."""
