"""How step results are stored (engine.flows.codec): a value JSON cannot hold is pickled and
signed, and a tampered one is refused."""

from __future__ import annotations

import pytest

from engine import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_non_json_result_is_pickled_signed_and_tamper_checked(routine, user):
    from engine.flows.codec import TamperedResult

    flow = api.start_flow(routine("t_object"), user)
    assert flow.results == [{1, 2, 3}]
    assert api.results_for_display(flow) == ["{1, 2, 3}"]
    stored = flow.stored_results[0]
    stored["__flowstudio_pickle__"] = stored["__flowstudio_pickle__"][:-3] + "abc"
    flow.stored_results = [stored]
    with pytest.raises(TamperedResult):
        flow.results  # noqa: B018
