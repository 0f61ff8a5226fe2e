"""The API under ``/api/``."""

from django.urls import path, register_converter
from drf_spectacular.renderers import OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularSwaggerView

from api.http.converters import IdConverter
from api.views import resources
from api.views.home import ApiRootView
from api.views.run_query import RunQueryView
from api.views.schema import SchemaView
from api.views.status import HealthView, StatsView

register_converter(IdConverter, "id")

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("run-query/", RunQueryView.as_view(), name="run-query"),
    path("users/", resources.UserList.as_view(), name="user-list"),
    path("users/<id:pk>/", resources.UserDetail.as_view(), name="user-detail"),
    path("users/<id:pk>/orders/", resources.UserOrderList.as_view(), name="user-orders"),
    path("products/", resources.ProductList.as_view(), name="product-list"),
    path("products/<id:pk>/", resources.ProductDetail.as_view(), name="product-detail"),
    path("orders/", resources.OrderList.as_view(), name="order-list"),
    path("orders/<id:pk>/", resources.OrderDetail.as_view(), name="order-detail"),
    path("stats/", StatsView.as_view(), name="stats"),
    path("health/", HealthView.as_view(), name="health"),
    path("schema/", SchemaView.as_view(), name="schema"),
    # The schema as application/json, which a browser shows instead of downloading.
    path(
        "schema.json",
        SchemaView.as_view(renderer_classes=[OpenApiJsonRenderer2]),
        name="schema-json",
    ),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
