# Types for the compiler only (setup.py builds asgi.py with them).
cimport cython
from prefork.asgi_response cimport AsgiResponse
from prefork.dispatch cimport HttpServerContext
from prefork.messages cimport Request, unpack_peer
from prefork.protocols.http cimport HttpProtocol
from prefork.protocols.http_flow cimport FlowControl

cdef class AsgiApp:
    cdef public object app, root_path, prefix, raw_prefix, state, _loop, websocket

    @cython.locals(flow=HttpProtocol)
    cpdef serve(self, proto, Request request)
    @cython.locals(flow=FlowControl, call=_Call, ctx=HttpServerContext)
    cpdef _Call _start(self, proto, Request request, bint streamed)
    cpdef object _the_loop(self)

cdef class _Call(AsgiResponse):
    cdef public AsgiApp app
    cdef public object task, chunks
    cdef public bint body_given

    cpdef _fill(self, AsgiApp app, proto, Request request, bint streamed)
    cpdef _wake(self)
    @cython.locals(proto=FlowControl, ctx=HttpServerContext)
    cpdef _end(self)
    @cython.locals(proto=FlowControl)
    cpdef _complete(self, last)

@cython.locals(peer=object, client=object, method=object, target=object, raw_path=object, path=object,
               path_bytes=bytes, headers=list, state=dict, methods=dict)
cpdef dict build_scope(AsgiApp app, Request request, object server)

cpdef dict _extensions(list headers)
