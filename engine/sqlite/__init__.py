"""Django's SQLite backend with the connections kept for reuse (see `base`)."""
