# Types for the compiler only (setup.py builds websocket.py with them): C fields
# keep an idle connection small (three doubles instead of three float objects;
# state and flags share one word, so the object stays 112 bytes with pmd).
cdef class WebSocketProtocol:
    cdef public object ctx, driver, tag, pmd, _buf, _frag, _out
    cdef public int state, flags
    cdef public Py_ssize_t _backlog
    cdef public double deadline, _idle_at, _ping_at
