"""``prefork-bench websocket`` (``bench/websocket.py``): N WebSocket
subscribers of one channel, a broadcast every S seconds, against prefork's
``pubsub`` route, uvicorn + websockets and the ``websockets`` library's own
server running the same broadcast app.

Modules: ``frames`` (the client's framing and the message payload, pure),
``deliveries`` (who got which message: loss and duplicates, pure),
``clients`` (the client processes' epoll loops), ``apps`` (the broadcast app
for uvicorn and the websockets server), ``servers`` (command lines, the
publisher, the sysctls), ``measure`` (one server's turn), ``report``, ``cli``.
"""
