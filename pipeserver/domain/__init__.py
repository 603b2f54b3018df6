"""The domain: the pipe and its registry, what they talk to; no I/O."""
