# Types for the compiler only (see http_flow.pxd).
cimport cython
from prefork.messages cimport Request
from prefork.protocols.http_parser cimport Parser
from prefork.protocols.http_response cimport HttpContext
from prefork.protocols.http_stream cimport StreamedBody

cdef class HttpProtocol(StreamedBody):
    cpdef dispatch(self, Request request)
    cpdef on_request(self, method, bytes target, version, headers, body, bint keep_alive, trailers=*)
    @cython.locals(p=Parser)
    cpdef bint upgradable(self, Request request)
    @cython.locals(p=Parser, out=list)
    cpdef data_received(self, data)
    @cython.locals(ctx=HttpContext)
    cpdef answered(self, request, status, length, bint hold=*)
    @cython.locals(ctx=HttpContext, old=int)
    cpdef _set_state(self, int new)
    @cython.locals(out=list)
    cpdef _take(self)
