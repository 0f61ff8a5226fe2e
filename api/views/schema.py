"""``/api/schema/``: drf-spectacular's schema view, one generation at a time per process.

drf-spectacular loads its extensions' target classes on a schema's first generation
without a lock (``OpenApiGeneratorExtension._load_class``); two threads generating at once
can find the other's half-done load and crash with an ``AttributeError``, a 500 (seen on
Gunicorn served directly, 16 threads per worker, when a browser asked for two schema
URLs at once). The schema is asked for rarely: one at a time costs nothing.
"""

from threading import Lock

from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView


class SchemaView(SpectacularAPIView):
    """`SpectacularAPIView` whose ``get`` runs one at a time in the process."""

    _generating = Lock()

    # As the parent's get is decorated: the schema leaves itself out (SERVE_INCLUDE_SCHEMA
    # is off in settings).
    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        with self._generating:
            return super().get(request, *args, **kwargs)
