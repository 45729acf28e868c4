"""The HTTP protocol's connection states (``HttpProtocol.state``), kept apart
so that the parser (``http_parser``) and the flow control (``http_flow``)
both import them and neither imports the other: compiled, the parser calls
the protocol's ``on_request`` through the flow control's class."""

IDLE = 0      # between requests (or before the first): keepalive/header timeout
HEAD = 1      # request line and headers arriving: header timeout -> 408
BODY = 2      # body arriving: body timeout between reads -> 408
CLOSED = 3    # closing: nothing more is parsed
WAITING = 4   # a handler runs elsewhere (the thread pool); its response is not out yet
UPGRADED = 5  # handed over to another protocol (a WebSocket): the driver drives that one now
