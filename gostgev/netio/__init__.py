"""The thin gevent I/O layer: reading heads with limits, piping sockets."""
