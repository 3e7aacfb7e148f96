"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Before the app is built: Django's instrumentation joins the middleware list the handler loads.
from config.tracing import setup_tracing  # noqa: E402

setup_tracing(default_service="tollgate-web", instrument_django=True)

django_asgi_app = get_asgi_application()

# Imported after Django is set up: they load models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from approvals.consumers import LiveConsumer  # noqa: E402
from config.origins import OriginValidatorMiddleware  # noqa: E402
from config.url_limit import UrlLengthLimitMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        # URLs above TOLLGATE_MAX_URL_BYTES get a 414 before Django (see config/url_limit.py).
        "http": UrlLengthLimitMiddleware(django_asgi_app),
        # The origin check (scheme, host and port) refuses pages from other sites and other ports;
        # the session cookie (AuthMiddlewareStack) says who is connecting.
        "websocket": OriginValidatorMiddleware(
            AuthMiddlewareStack(URLRouter([path("ws/live/", LiveConsumer.as_asgi())]))
        ),
    }
)
