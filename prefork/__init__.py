"""prefork: a pre-forking Python server with a native epoll reactor."""

from . import _compiled

__version__ = "0.1.0"

# the hot-path modules load compiled when built (setup.py), else, or with
# PREFORK_PURE=1, from their sources: _compiled.SourceFirst decides
_compiled.install()
