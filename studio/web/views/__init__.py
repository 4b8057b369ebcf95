"""The studio's views, one module per page group (flows, flow overrides, routines, LTMs, API
tokens, accounts): each reads the request, calls `engine.api` for an action and
`studio.web.pages` for what the page shows, and renders the template."""
