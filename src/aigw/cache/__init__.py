"""The response cache: canonical keys, a byte-bounded LRU, stored answers in either shape."""
