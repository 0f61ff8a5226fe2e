"""The Django and DRF internals the fast path reproduces or relies on, pinned by their source.

`api.fastpath` (and the fast accept of `api.domain.validation`) does what these
functions do, or calls into them below their public surface. When an upgrade changes one
of them, its test here fails and names the code to re-read; after re-reading (and
adapting), put the new hash here. The hash is of ``inspect.getsource``: any change
fails, a comment included, so nothing changes unseen.
"""

import hashlib
import inspect
from pydoc import locate

import pytest

# (qualified name, sha256 of its source [:12], the code that relies on it)
PINS = [
    (
        "django.core.handlers.wsgi.WSGIHandler.__call__",
        "8391f497d588",
        "api/fastpath/handler.py FastPathHandler.__call__ (signals, response)",
    ),
    (
        "django.core.handlers.base.BaseHandler.get_response",
        "3d6a79b124c2",
        "api/fastpath/handler.py FastPathHandler.__call__ (what a skipped cycle does)",
    ),
    (
        "django.core.handlers.base.reset_urlconf",
        "7ad5ce3f320f",
        "api/fastpath/handler.py DJANGO_RECEIVERS",
    ),
    (
        "django.db.close_old_connections",
        "c352dd45e833",
        "api/fastpath/handler.py DJANGO_RECEIVERS and housekeeping_aliases",
    ),
    ("django.db.reset_queries", "9989bcde56b2", "api/fastpath/handler.py DJANGO_RECEIVERS"),
    ("django.core.cache.close_caches", "abe7badf0640", "api/fastpath/handler.py DJANGO_RECEIVERS"),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.close_if_unusable_or_obsolete",
        "9e0690a760eb",
        "api/fastpath/handler.py housekeeping_aliases",
    ),
    (
        "django.http.request.HttpRequest.get_host",
        "02735c918f5c",
        "api/fastpath/handler.py CLIENT_KEYS and _client",
    ),
    (
        "django.http.request.HttpRequest._get_raw_host",
        "49d5b852251e",
        "api/fastpath/handler.py CLIENT_KEYS",
    ),
    (
        "django.http.request.HttpRequest.is_secure",
        "ae083f296324",
        "api/fastpath/handler.py _client",
    ),
    (
        "django.http.request.HttpRequest._get_scheme",
        "eed7d7c4b49b",
        "api/fastpath/handler.py CLIENT_KEYS",
    ),
    (
        "django.core.handlers.wsgi.WSGIRequest._get_scheme",
        "44ac77403fef",
        "api/fastpath/handler.py CLIENT_KEYS",
    ),
    (
        "django.middleware.security.SecurityMiddleware.process_request",
        "3373d262748c",
        "api/fastpath/handler.py ssl_redirect",
    ),
    (
        "django.middleware.security.SecurityMiddleware.process_response",
        "3822bd0d5f79",
        "api/fastpath/handler.py _response_headers",
    ),
    (
        "django.middleware.common.CommonMiddleware.process_request",
        "993f4d1f2084",
        "api/fastpath/handler.py check_user_agent; api/fastpath/checks.py PREPEND_WWW",
    ),
    (
        "django.middleware.common.CommonMiddleware.process_response",
        "eb5ad294e9fb",
        "api/fastpath/handler.py Content-Length",
    ),
    (
        "django.middleware.csrf.CsrfViewMiddleware.process_view",
        "cdbdabe04318",
        "api/fastpath/checks.py REPRODUCED_MIDDLEWARE (CSRF leaves GET alone)",
    ),
    (
        "django.middleware.clickjacking.XFrameOptionsMiddleware.process_response",
        "045e57882708",
        "api/fastpath/handler.py _response_headers",
    ),
    (
        "django.http.request.QueryDict.__init__",
        "1af0bf11eb6b",
        "api/fastpath/query_string.py query_params",
    ),
    (
        "django.db.models.sql.compiler.SQLCompiler.get_converters",
        "c6c8c1b71882",
        "api/db/compiled.py CompiledQuery._compile",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper._cursor",
        "bb632516d005",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper._prepare_cursor",
        "92079d0eed95",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.ensure_connection",
        "d7ea674f3e5e",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.close_if_health_check_failed",
        "f72eb45356f4",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.postgresql.base.DatabaseWrapper.get_connection_params",
        "c3b08b880d60",
        "api/db/compiled.py _execute_dbapi (ClientCursor factory, prepare_threshold)",
    ),
    (
        "django.db.backends.postgresql.base.DatabaseWrapper.is_usable",
        "c6d0cbdb5ef5",
        "api/db/compiled.py _fetch_dbapi (the query as the health check)",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.validate_thread_sharing",
        "d8961c58a675",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.validate_no_broken_transaction",
        "e278b1b29deb",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.utils.CursorWrapper._execute",
        "8a3a172b0a15",
        "api/db/compiled.py _fetch_dbapi",
    ),
    (
        "django.db.backends.sqlite3.base.SQLiteCursorWrapper.convert_query",
        "183a4b3544fb",
        "api/db/compiled.py dbapi_sql",
    ),
    (
        "django.db.backends.sqlite3.operations.DatabaseOperations.convert_datetimefield_value",
        "72a246bb7e13",
        "api/db/sqlite_converters.py datetime_converter",
    ),
    (
        "django.db.backends.sqlite3.operations.DatabaseOperations.convert_booleanfield_value",
        "0afd24a3bb40",
        "api/db/sqlite_converters.py boolean_converter",
    ),
    (
        "django.db.backends.sqlite3.operations.DatabaseOperations.get_decimalfield_converter",
        "4bb8564f4191",
        "api/db/sqlite_converters.py decimal_converter",
    ),
    (
        "django.db.utils.ConnectionHandler.__getitem__",
        "e2f3bd9b8a64",
        "api/db/compiled.py thread_connection",
    ),
    (
        "rest_framework.views.APIView.initial",
        "49a4a966fb04",
        "api/fastpath/checks.py unreproduced_policies",
    ),
    (
        "rest_framework.views.APIView.default_response_headers",
        "fdea21d29a3b",
        "api/fastpath/handler.py _response_headers",
    ),
    (
        "rest_framework.views.APIView.finalize_response",
        "cbcaead2dd2d",
        "api/fastpath/handler.py _response_headers",
    ),
    (
        "rest_framework.fields.DateTimeField.to_representation",
        "c992346916f3",
        "api/http/renderers.py OPTIONS; api/http/outputs.py output_columns",
    ),
    (
        "rest_framework.fields.DecimalField.to_representation",
        "1a3d7342070b",
        "api/http/renderers.py _default; api/http/outputs.py output_columns",
    ),
    (
        "rest_framework.views.APIView.check_permissions",
        "adb6576933b5",
        "api/fastpath/policies.py ViewPolicies.enforce (permissions)",
    ),
    (
        "rest_framework.views.APIView.permission_denied",
        "60e43e0731f5",
        "api/fastpath/policies.py ViewPolicies.enforce (401 or 403)",
    ),
    (
        "rest_framework.views.APIView.check_throttles",
        "265734c05c96",
        "api/fastpath/policies.py ViewPolicies.enforce (429)",
    ),
    (
        "rest_framework.views.APIView.handle_exception",
        "c713c21f901e",
        "api/fastpath/policies.py ViewPolicies.enforce (WWW-Authenticate)",
    ),
    (
        "rest_framework.views.APIView.get_authenticate_header",
        "c560a3b88f7f",
        "api/fastpath/policies.py ViewPolicies.auth_header",
    ),
    (
        "rest_framework.request.Request._authenticate",
        "b3df4cb506df",
        "api/fastpath/policies.py ViewPolicies.enforce (authentication)",
    ),
    (
        "rest_framework.request.Request._not_authenticated",
        "161d9c59bd6c",
        "api/fastpath/policies.py PolicyRequest (user and auth None)",
    ),
    (
        "rest_framework.authentication.TokenAuthentication.authenticate",
        "122a6776ae62",
        "api/fastpath/policies.py PolicyRequest (headers)",
    ),
    (
        "rest_framework.authentication.get_authorization_header",
        "a3717967ba03",
        "api/fastpath/policies.py EnvironHeaders",
    ),
    (
        "rest_framework.throttling.BaseThrottle.get_ident",
        "f5ee69f1ba8f",
        "api/fastpath/policies.py PolicyRequest (META)",
    ),
    (
        "rest_framework.exceptions.Throttled.__init__",
        "9f8fd4d5679c",
        "api/http/errors.py error_response_parts (Retry-After)",
    ),
    (
        "django.core.cache.backends.base.BaseCache.close",
        "d6b55968d67c",
        "api/fastpath/handler.py DJANGO_RECEIVERS (close_caches)",
    ),
    (
        "django.core.validators.EmailValidator.__call__",
        "0f858bb3bae4",
        "api/domain/validation.py _email_passes (its steps, the domain's verdict remembered)",
    ),
    (
        "django.db.models.fields.Field.get_db_prep_save",
        "b095edabbe2f",
        "api/db/compiled_inserts.py UNCHANGED (text goes in as it is)",
    ),
    (
        "django.db.models.fields.Field.get_db_prep_value",
        "00c11e761b7f",
        "api/db/compiled_inserts.py UNCHANGED (text goes in as it is)",
    ),
    (
        "django.db.models.fields.Field.get_prep_value",
        "7aa16ded6e6e",
        "api/db/compiled_inserts.py UNCHANGED (text goes in as it is)",
    ),
    (
        "django.db.models.fields.CharField.get_prep_value",
        "6d31653d6fa8",
        "api/db/compiled_inserts.py UNCHANGED (text goes in as it is)",
    ),
    (
        "django.db.models.fields.CharField.to_python",
        "1bd5528c714e",
        "api/db/compiled_inserts.py UNCHANGED (text goes in as it is)",
    ),
    (
        "django.db.transaction.Atomic.__enter__",
        "1cccb72ad29b",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
    (
        "django.db.transaction.Atomic.__exit__",
        "6c52b1e68d7d",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.set_autocommit",
        "4e91610fe9d8",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.commit",
        "54b37694faec",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
    (
        "django.db.backends.base.base.BaseDatabaseWrapper.close",
        "273787740ca0",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
    (
        "django.db.backends.sqlite3.base.DatabaseWrapper._start_transaction_under_autocommit",
        "7315cfc61c1d",
        "api/db/deadlines.py _sqlite_write_transaction (an outermost atomic block)",
    ),
]


@pytest.mark.parametrize("name,digest,relied_on_by", PINS, ids=[pin[0] for pin in PINS])
def test_the_internals_the_hot_path_relies_on_are_unchanged(
    name, digest, relied_on_by, django_db_blocker
):
    with django_db_blocker.unblock():  # pytest-django swaps ensure_connection while blocked
        obj = locate(name)
    assert obj is not None, f"{name} is gone: re-read {relied_on_by}"
    source = inspect.getsource(obj.fget if isinstance(obj, property) else obj)
    found = hashlib.sha256(source.encode()).hexdigest()[:12]
    assert found == digest, (
        f"{name} changed (source {found}): re-read {relied_on_by} against it, "
        "then update its hash here"
    )
