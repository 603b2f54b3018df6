"""Operations: the command line (twistd pipe), the composition root, metrics."""
