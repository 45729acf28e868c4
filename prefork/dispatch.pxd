# Types for the compiler only (see protocols/http_flow.pxd).
cimport cython
from prefork.messages cimport Request, new_request
from prefork.protocols.http cimport HttpProtocol
from prefork.protocols.http_response cimport HttpContext

cdef class Router:
    cdef public dict exact, constants
    cdef public list prefixes
    cdef public bint streaming

cdef class HttpServerContext(HttpContext):
    cdef public Router router
    cdef public object submit, hand_back, _constant_out, _access_log, forwarded
    cdef public dict asgi_calls
    cdef public Py_ssize_t requests
    cdef public bint draining

cdef class HttpServerProtocol(HttpProtocol):
    @cython.locals(ctx=HttpServerContext, router=Router)
    cpdef dispatch(self, Request request)
    @cython.locals(ctx=HttpServerContext, requests=Py_ssize_t, router=Router, path=bytes, query=bytes)
    cpdef on_request(self, method, bytes target, version, headers, body, bint keep_alive, trailers=*)
