"""Schemathesis against the gateway's live OpenAPI document: every operation, valid and invalid input.

What must hold whatever arrives: no 5xx, and every answer conforms to what the document declares
for it (status code, content type, headers, body schema). It runs on both databases against the
``fuzz_hub`` of this package's conftest: populated, with no worker and no relay, so nothing
generated here is ever executed or delivered. Bodies no generator makes (non-finite numbers, deep
nesting) are the business of ``test_hostile_bodies.py``.

``RESIMHUB_FUZZ_API_EXAMPLES`` sets the examples per operation and mode (valid and invalid data);
the total, at least 1,000 requests, is asserted at the end.
"""

from __future__ import annotations

import os
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = int(os.environ.get("RESIMHUB_FUZZ_API_EXAMPLES", "20"))
MIN_TOTAL_REQUESTS = 1000
#: A generated ``?wait=`` would hold a request open for up to a minute on work that, with no
#: worker here, never finishes: numbers above this are sent as this (non-numbers and negatives as
#: generated, so the validation of ``wait`` is still exercised).
MAX_WAIT_SENT_S = 0.05

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _fuzz_operation(operation, mode: GenerationMode, failures: list[str], sent: Counter, statuses: Counter) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if case.query and "wait" in case.query:
            try:
                case.query["wait"] = min(float(case.query["wait"]), MAX_WAIT_SENT_S)
            except (TypeError, ValueError):
                pass  # not a number: the API must answer 422, which the checks verify
        sent[label] += 1
        try:
            response = case.call_and_validate(checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected: every operation gets its share
            found = getattr(exc, "exceptions", None) or [exc]
            titles = "; ".join(sorted({getattr(e, "title", type(e).__name__) for e in found}))
            failures.append(f"{label} [{mode}] {titles}: {str(exc).strip()[:1200]}\n    {case.as_curl_command()[:400]}")
            return
        statuses[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (e.g. GET /health takes no input): the positive run covers it.
        assert mode is GenerationMode.NEGATIVE, label


def test_every_operation_of_the_live_openapi(fuzz_hub):
    # The pytest plugin's lazy schemas do not run under this pytest, so the operations are walked here.
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_hub.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, "the OpenAPI document lost most of its operations"
    failures: list[str] = []
    sent: Counter = Counter()
    statuses: Counter = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, failures, sent, statuses)
    total = sum(sent.values())
    print(f"\nOpenAPI fuzzing: {total} requests over {len(operations)} operations; "
          f"statuses {dict(sorted(statuses.items()))}; {len(failures)} failing cases")
    kinds = Counter(f.split(":", 1)[0] for f in failures)
    summary = "\n".join(f"{n:4d} x {k}" for k, n in kinds.most_common())
    assert not failures, f"{len(failures)} failing cases:\n{summary}\nfirst ones:\n" + "\n".join(failures[:10])
    never = [f"{op.method.upper()} {op.path}" for op in operations if not sent[f"{op.method.upper()} {op.path}"]]
    assert not never, f"never exercised: {never}"
    assert total >= MIN_TOTAL_REQUESTS, total
    assert not any(status >= 500 for status in statuses)
