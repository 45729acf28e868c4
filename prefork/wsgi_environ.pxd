# Types for the compiler only (setup.py builds wsgi_environ.py with them).
cimport cython
from prefork.messages cimport Request

@cython.locals(environ=dict, keys=dict, path=str, mount=str, name=bytes, value=bytes, key=str,
               text=str, old=str, whole=bytes, scheme=str)
cpdef dict build_environ(object app, Request request, object sockname=*, object errors=*, object body=*)

@cython.locals(text=str, name=str, port=str)
cpdef tuple _server_name(bytes host, object sockname, str scheme)

@cython.locals(text=str)
cpdef Py_ssize_t check_status(object status) except -1

@cython.locals(item=object, name=str, value=str)
cpdef check_headers(object headers)
