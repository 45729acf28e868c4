# Types for the compiler only (see http_flow.pxd).
from prefork.protocols.http_flow cimport FlowControl

cdef class StreamedBody(FlowControl):
    pass
