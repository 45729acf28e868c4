# Types for the compiler only (setup.py builds wsgi.py with them): the fields
# of a call are C fields, not a dict's or slots' lookups, on both threads.
cimport cython
from prefork.dispatch cimport HttpServerContext
from prefork.framing cimport end_head
from prefork.messages cimport Request, no_content
from prefork.protocols.http_flow cimport FlowControl
from prefork.wsgi_environ cimport Mount, build_environ, check_headers, check_status

cdef class WsgiApp(Mount):
    cdef public object app

    @cython.locals(flow=FlowControl, ctx=HttpServerContext, call=_Call)
    cpdef serve(self, proto, Request request)

cpdef object _local_name(object proto, Request request)

cdef class _Call:
    cdef public Request request
    cdef public WsgiApp app
    cdef public object proto, hand_back, server, waiter, status, headers, pending, body
    cdef public Py_ssize_t handed, delivered, high_water, code, declared, length, facts
    cdef public bint gone, blocked, head_sent, committed, chunked, keep_alive, no_body, deferred
    cpdef _fill(self, WsgiApp app, proto, Request request, hand_back, server, Py_ssize_t high_water)
    cpdef object _file(self, object result)
    cpdef object _iterate(self, object result)
    cpdef object _piece(self, bytes chunk)
    cpdef object _flush(self)
    cpdef object _close(self, object result)
    cpdef object _emit(self, bytes body, bint more)
    @cython.locals(name=str, value=str, text=list, parts=list, facts=Py_ssize_t, flow=FlowControl,
                   ctx=HttpServerContext, headers=list, i=Py_ssize_t)
    cpdef bytes _head(self, Py_ssize_t first, bint more)
    cpdef object _hand(self, object fn, object data)
    @cython.locals(proto=FlowControl, ctx=HttpServerContext)
    cpdef bint _end(self)
    @cython.locals(proto=FlowControl)
    cpdef object _complete(self, object last)
