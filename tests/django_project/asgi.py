"""The Django fixture project's ASGI application (a route names it as
"tests.django_project.asgi:application")."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

application = get_asgi_application()
