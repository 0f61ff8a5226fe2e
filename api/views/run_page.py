"""``/run/``: the assignment batch in a browser, POST-redirect-GET.

GET shows the row counts and a button; the button POSTs (CSRF-protected) the batch and is
answered 303 to ``/run/?result=<token>`` (`api.views.run_result`), a GET that shows each
record's outcome and a summary per table: a reload shows the same result and inserts
nothing. A GET never writes. When a database failed and nothing was stored the POST
answers 503 with ``Retry-After`` and the results instead, so that a reload retries. A
``result`` that does not verify is a 400 page saying so.
"""

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views import View

from api.db.failures import failure_kind
from api.domain.batches import read_batch
from api.domain.results import FAILED
from api.http.errors import RETRY_AFTER_SECONDS
from api.http.inserts import batch_status
from api.services.batch_insert import batch_insert
from api.services.selectors import row_counts
from api.views.run_result import RESULT_PARAM, BadResult, Run

logger = logging.getLogger(__name__)
TEMPLATE = "api/run.html"
BAD_RESULT = (
    "The result in this address is not one this server made (altered, or signed with "
    "another key); run the batch again to see one."
)


class RunPageView(View):
    """Show counts (and a run's result) on GET; insert the assignment batch on POST."""

    http_method_names = ["get", "post", "head", "options"]

    def dispatch(self, request, *args, **kwargs):
        if not settings.RUN_PAGE_ENABLED:
            raise Http404("the run page is off (RUN_PAGE_ENABLED)")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        token = request.GET.get(RESULT_PARAM)
        if not token:
            return self._render(request, run=None)
        try:
            run = Run.from_token(token)
        except BadResult as exc:
            logger.info("run page: bad result token: %s", exc)
            return self._render(request, run=None, status=400, bad_result=BAD_RESULT)
        return self._render(request, run=run)

    def post(self, request):
        batch = read_batch()
        result = batch_insert(**batch)
        run = Run.of(batch, result)
        if batch_status(result) == 503:  # nothing stored: nothing to protect from a reload
            return self._render(request, run=run, status=503)
        query = urlencode({RESULT_PARAM: run.token()}, safe=":")
        return HttpResponseRedirect(f"{reverse('run')}?{query}", status=303)

    def _render(self, request, *, run: Run | None, status: int = 200, **context):
        if run is not None:
            context |= {
                "run": run,
                "summary": run.result.summary(),
                "tables": [
                    (name, run.result.summary_lines()[name], rows)
                    for name, rows in run.rows().items()
                ],
                "already_stored": run.already_stored_note(),
                "failed": run.count(status=FAILED),
            }
        try:
            context["counts"] = row_counts()
        except DatabaseError as exc:
            logger.error("run page: cannot count rows: %s", exc)
            context["database_error"] = failure_kind(exc)
            status = 503
        response = render(request, TEMPLATE, context, status=status)
        if status == 503:
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
