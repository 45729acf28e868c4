# Types for the compiler only (setup.py builds websocket.py with them): C fields
# keep an idle connection small (three doubles instead of three float objects).
cdef class WebSocketProtocol:
    cdef public object ctx, driver, tag, pmd, _buf, _frag, _out
    cdef public int state
    cdef public Py_ssize_t flags, _backlog
    cdef public double deadline, _idle_at, _ping_at
