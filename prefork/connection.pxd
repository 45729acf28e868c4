# Types for the compiler only (see driver.pxd).
from prefork.driver cimport BaseDriver

cdef class Connection(BaseDriver):
    pass
