"""highway family (being written; registers nothing yet)."""
