# Types for the compiler only (setup.py builds the sources with them): the
# state of HttpProtocol, held by its base so that the mixins' methods reach it
# as C fields. http_flow.py is the source; pure Python keeps it in __slots__.
cdef class FlowControl:
    cdef public object ctx, peer, driver, _p, _out, _pending, _paused
    cdef public bint closing, linger, _stopped, held
    cdef public double deadline
    cdef public int state
    cdef public Py_ssize_t _requests

    cpdef _set_state(self, int new)
    cpdef answered(self, request, status, length, bint hold=*)
    cpdef _take(self)
    cpdef on_request(self, method, bytes target, version, headers, body, bint keep_alive, trailers=*)
    cpdef wait(self)
    cpdef end_wait(self, out=*)
    cpdef answer_waited(self, request, out, Py_ssize_t status, Py_ssize_t length, bint hold=*)
    cpdef after_wait(self)
    cpdef _run_pending(self)
