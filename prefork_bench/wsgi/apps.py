"""The WSGI app every server of ``bench/wsgi.py`` runs (``prefork_bench.wsgi.apps:app``).

One callable, the same for every server, routing by path prefix before anything else:

    /flask/items/{item_id}    Flask: a JSON object built from an int path parameter
    /django/items/{item_id}   Django: the same JSON from a view (settings in code, no database)
    anything else             raw WSGI: ``Hello, World!`` text/plain (hello world, slowloris)
"""

from __future__ import annotations

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path as url
from flask import Flask

from ..asgi.answers import BODY, item_json

if not settings.configured:
    settings.configure(DEBUG=False, SECRET_KEY="prefork-bench", ALLOWED_HOSTS=["*"],
                       ROOT_URLCONF=__name__, MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={},
                       USE_TZ=True, LOGGING_CONFIG=None)
    django.setup()

_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


# --- (a), (d): raw WSGI ---------------------------------------------------------------


def hello(environ, start_response):
    start_response("200 OK", _HELLO_HEADERS)
    return [BODY]


# --- (b): Flask -----------------------------------------------------------------------

flask_app = Flask(__name__)


@flask_app.get("/flask/items/<int:item_id>")
def flask_item(item_id: int):
    return item_json(item_id)


# --- (c): Django ----------------------------------------------------------------------


def django_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse(item_json(item_id))


urlpatterns = [url("django/items/<int:item_id>", django_item)]
django_app = get_wsgi_application()


# --- the one app ----------------------------------------------------------------------


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/flask/"):
        return flask_app(environ, start_response)
    if path.startswith("/django/"):
        return django_app(environ, start_response)
    return hello(environ, start_response)
