"""What a Task's perform() may return besides a raw value (engine.core.flows.signals)."""

from __future__ import annotations

import pytest

from engine import result


def test_result_refuses_value_and_fields_together():
    with pytest.raises(TypeError):
        result(1, a=2)
