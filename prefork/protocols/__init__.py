"""Sans-IO protocols shared by every backend.

A protocol object takes bytes (``data_received``), end of input
(``eof_received``) and deadlines (``timeout``), and returns the bytes to send.
The driver reads three attributes after each call: ``closing`` (close once
the output is flushed), ``linger`` (drain unread input before closing, so an
error response is not destroyed by a reset) and ``deadline`` (absolute
``time.monotonic()`` at which to call ``timeout``; 0.0 for none). The whole
contract is ``prefork.driver.DrivenProtocol`` (and ``Driver``, what a protocol
may ask of its driver).
"""
