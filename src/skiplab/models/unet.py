"""unet family (being written; registers nothing yet)."""
