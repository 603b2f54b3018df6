"""HTTP/2: the connection (on h2) and its streams, each a request's channel."""
