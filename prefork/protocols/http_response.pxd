# Types for the compiler only (see http_flow.pxd).
cdef class HttpContext:
    cdef public object config, keepalive_requests, retry_after, on_response, clock, server_line, date_line
    cdef public object _date_second, _heads, parser_pool, parser_pool_max
    cdef public double keepalive_timeout
    cdef public Py_ssize_t reading, pooled

cpdef bytes status_line(Py_ssize_t status)
