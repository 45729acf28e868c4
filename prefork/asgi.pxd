# Types for the compiler only (setup.py builds asgi.py with them).
from prefork.asgi_response cimport AsgiResponse

cdef class AsgiApp:
    cdef public object app, root_path, prefix, raw_prefix, state, _loop, websocket

cdef class _Call(AsgiResponse):
    cdef public object app, task, chunks
    cdef public bint body_given
