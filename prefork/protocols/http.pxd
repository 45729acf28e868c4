# Types for the compiler only (see http_flow.pxd).
from prefork.messages cimport Request
from prefork.protocols.http_stream cimport StreamedBody

cdef class HttpProtocol(StreamedBody):
    cpdef dispatch(self, Request request)
