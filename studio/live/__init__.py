"""Live updates over websockets: the engine's event sink (`publisher`), the websocket consumer
(`consumer`), what it reads from the database (`reads`) and the page fragments it pushes
(`fragments`), the embedded mode's channel layer (`layers`) and the origin check (`origin`)."""
