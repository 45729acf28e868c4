# Types for the compiler only (setup.py builds asgi_response.py with them).
cimport cython
from prefork.dispatch cimport HttpServerContext
from prefork.framing cimport end_head
from prefork.messages cimport Request, no_content
from prefork.protocols.http_response cimport status_line

cdef class _Sent:
    pass

cdef class AsgiResponse:
    cdef public object proto, request, headers, waiter
    cdef public Py_ssize_t status, length, declared
    cdef public bint started, head_sent, done, gone, half_closed, body_done, chunked, keep_alive
    cdef public bint head_only, no_body, trailers, te, body_sent, file_sent

    cpdef _begin(self, proto, Request request, bint body_done)
    cpdef _complete(self, last)
    cpdef _last(self, list parts)
    @cython.locals(ctx=HttpServerContext, parts=list)
    cpdef bytes _head(self, Py_ssize_t first, bint more, bint known=*)
