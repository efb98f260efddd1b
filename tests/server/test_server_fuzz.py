"""Schema-driven fuzzing: requests generated from `/openapi.json`, valid and invalid, never
get a 5xx, and every answer matches the schema (bounded: a fixed number of cases)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(client, mode):
    api = schemathesis.openapi.from_dict(client.get("/openapi.json").json())

    @given(case=api.as_strategy(mode))
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):  # noqa: ANN001
        request = case.as_transport_kwargs(base_url=str(client.base_url))
        if not request.get("cookies"):  # the API uses none; the test client warns about them
            request.pop("cookies", None)
        if isinstance(request.get("data"), bytes | str):  # raw bodies, in httpx's words
            request["content"] = request.pop("data")
        response = client.request(**request)
        case.validate_response(response)

    check()
