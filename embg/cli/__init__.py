"""Console entry points. Each turns EmbgError into one line on stderr and exit status 2."""
