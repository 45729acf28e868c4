# Types for the compiler only (setup.py builds reactor.py with them).
cdef class Reactor:
    cdef public object clock, backend, _mask, _rcb, _wcb, _data, _timers, _ready, _threadsafe
    cdef public object _signals, _old_signals, _wakeup, _old_wakeup, on_error
    cdef public Py_ssize_t maxevents, _seq, _cancelled, _efd
    cdef public bint _stopping, running, _woken

cdef class EpollBackend:
    cdef public object _ep
