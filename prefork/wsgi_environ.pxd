# Types for the compiler only (setup.py builds wsgi_environ.py with them).
cimport cython
from prefork.messages cimport Request

cdef class Mount:
    cdef public object mount, script_name, errors
    cdef public dict hosts, peers

cdef class ErrorStream:
    cdef public object _log, _buf

@cython.locals(environ=dict, keys=dict, path=str, mount=str, name=bytes, value=bytes, key=str,
               text=str, old=str, whole=bytes, scheme=str, names=tuple, peer=tuple, raw=bytes)
cpdef dict build_environ(Mount app, Request request, object sockname=*, object errors=*, object body=*)

cpdef tuple _remote(object peer)

cpdef _remember(dict cache, object key, object value)

@cython.locals(text=str, name=str, port=str)
cpdef tuple _server_name(bytes host, object sockname, str scheme)

@cython.locals(text=str)
cpdef Py_ssize_t check_status(object status) except -1

@cython.locals(item=object, name=str, value=str, lower=str, facts=Py_ssize_t, declared=Py_ssize_t, size=Py_ssize_t)
cpdef Py_ssize_t check_headers(object headers) except -1

@cython.locals(digits=str, length=Py_ssize_t, ch=Py_UCS4)
cpdef Py_ssize_t _content_length(str value) except -1
