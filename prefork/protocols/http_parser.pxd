cimport cython
# Types for the compiler only (setup.py): http_parser.py is the source.
from prefork.protocols.http_flow cimport FlowControl
cdef class Parser:
    cdef public object parser, proto, body, trailers, sink, version, content_length
    cdef public bytes url, method, expect, good_host
    cdef public list headers
    cdef public Py_ssize_t header_bytes, body_len, head_bytes, host_count
    cdef public object max_body, header_timeout
    cdef public Py_ssize_t max_url, max_headers, max_header_bytes
    cdef public bint chunked, connection, in_message, head_done, reusable, special, continue_due, keep_alive

    @cython.locals(headers=list, n=Py_ssize_t, lname=bytes)
    cpdef on_header(self, bytes name, bytes value)
    cpdef on_url(self, bytes url)
    @cython.locals(proto=FlowControl)
    cpdef on_message_begin(self)
    @cython.locals(proto=FlowControl, keep_alive=bint)
    cpdef on_message_complete(self)
