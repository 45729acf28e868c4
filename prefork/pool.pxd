# Types for the compiler only (setup.py builds pool.py with them).
cdef class ThreadPool:
    cdef public object _hand_back, _call_soon, _jobs, _idle, _searcher, _busy, _threads
    cdef public Py_ssize_t _limit, submitted, rejected
    cdef public bint _kick_due, _stopping, _batch
