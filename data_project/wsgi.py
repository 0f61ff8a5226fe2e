"""WSGI entry point: ``gunicorn data_project.wsgi`` (or ``python -m data_project.granian_server``).

Django's handler, with lookups and insert batches answered ahead of its request cycle
(`api.fastpath`; ``LOOKUP_FAST_PATH=0`` and ``INSERT_FAST_PATH=0`` turn that off), behind
`ChunkedBodies`, which reads a chunked request body that Django alone would take for an
empty one; its PostgreSQL reads bounded by ``READ_DEADLINE_SECONDS``
(`api.db.deadlines.serve_with_read_deadlines`); under a load test's ``LOADTEST_RUN_ID``,
every response names the run (`data_project.run_id`). The handler times and counts every
request for ``/metrics`` (`api.metrics.wsgi`, unless ``METRICS=0``). Set up as
`django.core.wsgi.get_wsgi_application` does.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402

from api.db.deadlines import serve_with_read_deadlines  # noqa: E402
from api.fastpath import FastPathHandler  # noqa: E402  (needs the apps loaded)
from data_project.chunked_bodies import ChunkedBodies  # noqa: E402
from data_project.run_id import RunIdHeader  # noqa: E402

serve_with_read_deadlines(settings.READ_DEADLINE_SECONDS)
application = ChunkedBodies(FastPathHandler(), limit_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
if settings.LOADTEST_RUN_ID:
    application = RunIdHeader(application, settings.LOADTEST_RUN_ID)
