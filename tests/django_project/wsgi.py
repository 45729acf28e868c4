"""The Django fixture project's WSGI application (a route names it as
"tests.django_project.wsgi:application"): the same views as over ASGI."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

application = get_wsgi_application()
