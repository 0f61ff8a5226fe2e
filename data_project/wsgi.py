"""WSGI entry point: ``gunicorn data_project.wsgi``.

Django's handler, with lookups and insert batches answered ahead of its request cycle
(`api.fastpath`; ``LOOKUP_FAST_PATH=0`` and ``INSERT_FAST_PATH=0`` turn that off). Set up as
`django.core.wsgi.get_wsgi_application` does.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")
django.setup(set_prefix=False)

from api.fastpath import FastPathHandler  # noqa: E402  (needs the apps loaded)

application = FastPathHandler()
