"""Rate limiting: pure limiter cores (``algorithms``) and their atomic Redis twins."""
