"""``/run/``: the assignment batch in a browser.

GET shows the row counts and a button; the button POSTs (CSRF-protected) and the page
shows each record's outcome. A GET never writes.
"""

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404
from django.shortcuts import render
from django.views import View

from api.batches import read_batch
from api.errors import RETRY_AFTER_SECONDS, failure_kind
from api.selectors import row_counts
from api.services.batch_insert import batch_insert
from api.views.run_query import batch_status

logger = logging.getLogger(__name__)
TEMPLATE = "api/run.html"


class RunPageView(View):
    """Show counts on GET; insert the assignment batch on POST and show the results."""

    http_method_names = ["get", "post", "head", "options"]

    def dispatch(self, request, *args, **kwargs):
        if not settings.RUN_PAGE_ENABLED:
            raise Http404("the run page is off (RUN_PAGE_ENABLED)")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        return self._render(request, result=None)

    def post(self, request):
        batch = read_batch()
        result = batch_insert(**batch)
        rows = {
            name: [(batch[name][r.index].get("id"), r) for r in results]
            for name, results in result.by_model().items()
        }
        status = batch_status(result)
        return self._render(request, result=result, rows=rows, status=status)

    def _render(self, request, *, status: int = 200, **context):
        try:
            context["counts"] = row_counts()
        except DatabaseError as exc:
            logger.error("run page: cannot count rows: %s", exc)
            context["database_error"] = failure_kind(exc)
            status = 503
        response = render(request, TEMPLATE, context, status=status)
        if status in (207, 503):
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
