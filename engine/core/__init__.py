"""The pure engine core: plain Python, no Django, Huey or Channels imports."""
