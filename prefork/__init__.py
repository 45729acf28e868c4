"""prefork: a pre-forking Python server with a native epoll reactor."""

__version__ = "0.1.0"
