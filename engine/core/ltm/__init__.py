"""Labeled Transition Models, pure, one module per part, each depending only on those above:

- `definition`: errors, names, and the checks of `init`/`transitions` (below the class);
- `records`: plain data: instance records, transition calls and moves, effects, plans;
- `tree`: a run's records arranged as its tree (each record's class, children, walk order);
- `planner`: records in, records out (`plan`, `plan_start`, `plan_transition`);
- `runtime`: the runtime port (`Runtime`), its in-memory reference, the default runtime;
- `node`: the author API, the `LTM` class (public as `engine.LTM`);
- `registry`: root classes by name;
- `view`: read-only views of a stored run (`RunView`).
"""
