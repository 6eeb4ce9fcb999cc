"""Pure, sans-IO codecs.

Every parser here takes bytes and returns a value, returns ``None`` meaning
"need more data", or raises :class:`gostgev.errors.RemoteProtocolError`.
Nothing in this package imports gevent or touches a socket.
"""
