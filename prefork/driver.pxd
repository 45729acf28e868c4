# Types for the compiler only (setup.py builds driver.py with them): the
# state both drivers (connection.Connection, aio.AioConnection) share, held
# by their base so BaseDriver's methods reach it as C fields. Pure Python
# keeps it in Connection's __slots__ (AioConnection's __dict__).
cimport cython
from prefork.protocols.http_flow cimport FlowControl

cdef class BaseDriver:
    cdef public object proto, wbuf, timer
    cdef public Py_ssize_t fd, flags
    cdef public double send_deadline

    cpdef write(self, out)
    cpdef deliver(self, out)
    @cython.locals(flow=FlowControl, closing=bint, deadline=double)
    cpdef after(self)
