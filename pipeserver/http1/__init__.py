"""HTTP/1.1: the channel that streams request bodies."""
