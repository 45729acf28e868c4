# Types for the compiler only (see http_flow.pxd).
cimport cython
from prefork.messages cimport Request
from prefork.protocols.http_parser cimport Parser
from prefork.protocols.http_stream cimport StreamedBody

cdef class HttpProtocol(StreamedBody):
    cpdef dispatch(self, Request request)
    @cython.locals(p=Parser)
    cpdef bint upgradable(self, Request request)
    @cython.locals(p=Parser, out=list)
    cpdef data_received(self, data)
