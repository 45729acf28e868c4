"""Settings of the Django fixture project: no database, no apps, no middleware
that needs one; every host allowed (the tests connect to 127.0.0.1)."""

SECRET_KEY = "prefork-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
