# Types for the compiler only (setup.py builds framing.py with them): end_head
# is a C call from the adapters' heads (asgi_response, wsgi).
cpdef tuple end_head(list parts, object version, bint framed, bint more, Py_ssize_t first, bint head_only,
                     bint length_known, bint keep_alive)
