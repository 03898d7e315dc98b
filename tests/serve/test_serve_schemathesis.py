"""Property-based run of schemathesis against the live server's OpenAPI schema: no request it generates (valid or
not) may get a 5xx, and every answer must match the documented status codes, content types and schemas."""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from model_workspace import ServerThread, exported_workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_server():
    from eft.api.serving import ServingSettings
    from eft.serve.app import create_app

    app = create_app(ServingSettings(model_dir=str(exported_workdir() / "export"), max_inputs_per_request=16,
                                    max_request_bytes=256 * 1024))
    with ServerThread(app) as srv:
        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/v1/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield srv


OPERATIONS = ["POST /v1/embeddings", "GET /v1/models", "GET /v1/health/live", "GET /v1/health/ready",
              "GET /metrics"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(live_server):
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")


def test_schema_documents_every_operation(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert set(OPERATIONS) <= labels


# schemathesis' own pytest plugin does not run under pytest 9, so its strategies are driven with hypothesis here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_errors(api_schema, live_server, label, mode):
    operation = api_schema.find_operation_by_label(label)
    if mode is GenerationMode.NEGATIVE and label != "POST /v1/embeddings":
        pytest.skip("GET operations without parameters have no negative space")
    examples = 80 if label == "POST /v1/embeddings" else 5
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        response = case.call_and_validate(base_url=live_server.url, checks=CHECKS)
        assert response.status_code < 500, (case.body, response.text)
        statuses.append(response.status_code)

    run()
    assert statuses
    if label == "POST /v1/embeddings" and mode is GenerationMode.POSITIVE:
        assert 200 in statuses  # valid requests were generated and served
    if mode is GenerationMode.NEGATIVE:
        assert all(400 <= s < 500 for s in statuses), statuses
    # the server still serves after the run
    r = httpx.post(f"{live_server.url}/v1/embeddings", json={"model": "minilm-test", "input": "after fuzzing"})
    assert r.status_code == 200
