"""The pure engine core: plain Python, no Django, Huey or Channels imports.

`flows` (Task scripts: signals, the script registry, outcomes), `ltm` (Labeled Transition
Models: definitions, the author's class, records, the planner, the runtime port), `graph`
(diagram data, its extraction and its DOT text), and `errors`, shared by both.
"""
