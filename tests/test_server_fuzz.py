"""The server's OpenAPI schema, fuzzed with schemathesis against a live server on 127.0.0.1.

For every operation, 50 generated requests that match the schema and, where an operation takes
input, 50 that break it; every answer must pass schemathesis' checks: no 5xx, a documented status
code, content type and headers, a body that matches its schema, and schema-breaking input refused.

One check is left out for /api/predict: that a request matching the schema is accepted. The schema
can say "a file" and "28x28 numbers in [0, 1]", not "an image with a digit on it", so a valid-looking
body can still be refused, as documented: 422 not_an_image or no_digit.

schemathesis' pytest plugin (`from_fixture`) does not run under pytest 9, so the operations are
listed here and each is driven by hypothesis through `operation.as_strategy`; a test checks that the
list and the schema agree, so a new endpoint cannot go unfuzzed.
"""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from mnist_study.serving.server import Limits  # noqa: E402

from test_serve import serving  # noqa: E402

CASES = 50  # per operation and mode: ~15 s in all on 2 cores
OPERATIONS = [("GET", "/health"), ("GET", "/api/models"), ("POST", "/api/predict")]
TAKES_INPUT = {("POST", "/api/predict")}
SEMANTIC_REFUSALS = {("POST", "/api/predict"): [positive_data_acceptance]}  # see the module docstring


@pytest.fixture(scope="module")
def live(tiny_run):
    # A rate limit well above the fuzzing's pace: 429 stays documented, but is not what gets tested.
    with serving(tiny_run, Limits(requests_per_minute=60_000)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live}/openapi.json")


@contextmanager
def subnormal_floats():
    """Subnormal floats back on for hypothesis, which refuses to run without them.

    Training sets the CPU's flush-to-zero mode for the whole process (fast RMSprop), and the
    session's tiny run was trained in this process.
    """
    import torch

    flushing = 5e-324 * 1.0 == 0.0  # the smallest subnormal survives a multiplication unless flushed
    torch.set_flush_denormal(False)
    try:
        yield
    finally:
        torch.set_flush_denormal(flushing)


def test_every_operation_is_fuzzed(live):
    paths = httpx.get(f"{live}/openapi.json").json()["paths"]
    assert sorted((method.upper(), path) for path, item in paths.items() for method in item) == sorted(OPERATIONS)


@pytest.mark.parametrize("method, path, mode", [
    (method, path, mode) for method, path in OPERATIONS for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or (method, path) in TAKES_INPUT])
def test_answers_match_the_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]
    excluded = SEMANTIC_REFUSALS.get((method, path), [])
    answered: dict[int, int] = {}

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case):
        response = case.call_and_validate(excluded_checks=excluded, timeout=30)
        answered[response.status_code] = answered.get(response.status_code, 0) + 1

    with subnormal_floats():
        check()
    # it really did ask: a GET without parameters has one possible request, hypothesis sends it once
    assert sum(answered.values()) >= (CASES // 2 if (method, path) in TAKES_INPUT else 1)
    if mode is GenerationMode.POSITIVE:
        assert 200 in answered, answered
    else:  # which schema-breaking requests must be refused is schemathesis' check; unknown query keys are not
        assert any(400 <= status < 500 for status in answered), answered
