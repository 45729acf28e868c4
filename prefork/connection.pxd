# Types for the compiler only (see driver.pxd).
cimport cython
from prefork.driver cimport BaseDriver
from prefork.protocols.http cimport HttpProtocol

cdef class Connection(BaseDriver):
    cpdef write(self, out)

@cython.locals(http=HttpProtocol)
cpdef object _feed(object proto, object data)
