"""Flow Studio: the Django project and its web UI."""
