"""pipeserver: an HTTP pipe server on Twisted.

A sender PUTs or POSTs a body to a path, receivers GET the same path, and the
bytes stream through in real time with backpressure; nothing is stored.
"""

__version__ = "0.1.0"
