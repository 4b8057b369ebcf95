"""The studio's pages, one module per page group (routines, flows, flow overrides, LTMs)."""
