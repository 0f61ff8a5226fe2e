"""The answer to an insert batch: every record's result and one status for the batch.

``POST /api/run-query/?type=insert`` and the ``/run/`` page both decide the status with
`batch_status`: 200, 207 (a partial commit) or 503 (nothing stored).
"""

from time import perf_counter

from rest_framework import status
from rest_framework.response import Response

from api.domain.results import BatchResult
from api.http.errors import RETRY_AFTER_SECONDS
from api.http.query_params import INSERT
from api.metrics import BATCHES, RECORDS


def batch_status(result: BatchResult) -> int:
    """200 when no database failed; 503 when one did and nothing was stored; 207 (some
    records stored, some ``failed``: a partial commit) otherwise.

    A 503 tells a client that nothing happened, so it is never the answer to a batch of
    which part was written.
    """
    if not result.has_failures:
        return status.HTTP_200_OK
    return (
        status.HTTP_207_MULTI_STATUS if result.has_inserts else status.HTTP_503_SERVICE_UNAVAILABLE
    )


def batch_answer(result: BatchResult, started: float) -> tuple[int, dict, dict[str, str]]:
    """``(status, body, headers)`` of the answer to a batch: every record's result in
    submission order, `batch_status`, ``Retry-After`` when any record failed.

    ``started``: the `perf_counter` reading the batch's ``elapsed_ms`` counts from. DRF's
    view (`batch_response`) and the insert fast path (`api.fastpath`) both answer with it,
    and count the batch and its records in the metrics (`api.metrics`) here.
    """
    summary = result.summary()
    code = batch_status(result)
    BATCHES.labels(str(code)).inc()
    for store, counts in summary.items():
        for outcome, count in counts.items():
            if count:
                RECORDS.labels(store, outcome).inc(count)
    body = {
        "type": INSERT,
        "summary": summary,
        **{name: [r.as_dict() for r in rs] for name, rs in result.by_model().items()},
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if result.has_failures else {}
    return code, body, headers


def batch_response(result: BatchResult, started: float) -> Response:
    """`batch_answer` as DRF's ``Response``."""
    code, body, headers = batch_answer(result, started)
    return Response(body, status=code, headers=headers or None)
