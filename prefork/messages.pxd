# Types for the compiler only (setup.py builds messages.py with them).
cimport cython
cdef class Request:
    cdef public object method, target, path, query, version, headers, body, _peer, trailers, scheme
    cdef public bint keep_alive

    cpdef _fill(self, method, target, path, query, version, headers, body, bint keep_alive, peer, trailers)

@cython.locals(request=Request)
cpdef Request new_request(method, target, path, query, version, headers, body, bint keep_alive, peer, trailers)

cdef class FileChunk:
    cdef public object fd, offset, count

cdef class Response:
    cdef public object status, body, content_type, headers, file, length

cpdef bint no_content(Py_ssize_t status)

@cython.locals(ip=cython.ulonglong)
cpdef object unpack_peer(object peer)
