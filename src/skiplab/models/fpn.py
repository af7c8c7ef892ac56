"""fpn family (being written; registers nothing yet)."""
