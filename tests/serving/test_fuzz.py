"""OpenAPI-driven fuzzing of the live server with schemathesis: no input may produce a 5xx.

Hypothesis drives each operation's strategy directly (positive and negative data), because schemathesis'
``from_fixture`` pytest integration does not run under this pytest version.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from .conftest import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

# These two misfire on file uploads (TOOLCHAIN.md: ST202 a schema-valid empty file is rightly rejected, ST201
# a "file" sent as a JSON object is accepted as bytes). Every other check runs, "not a server error" included.
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_api_conforms_and_never_fails(live_server: LiveServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/health",
        "/v1/detect",
        "/v1/detect/batch",
        "/v1/models",
        "/v1/admin/reload",
    }
    fuzzed = set()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(excluded_checks=EXCLUDED, timeout=60)
            assert response.status_code < 500

        try:
            run()
        except Unsatisfiable:
            # An operation without inputs (GET /health) has no invalid variant to generate.
            assert mode is GenerationMode.NEGATIVE and not operation.query and not operation.body, (
                operation.path
            )
            continue
        fuzzed.add(operation.path)
    assert {"/v1/detect", "/v1/detect/batch"} <= fuzzed
