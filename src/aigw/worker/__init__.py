"""``aigw worker``: a small model server for local models, with dynamic batching.

Needs the ``worker`` extra (``pip install 'aigw[worker]'``): torch, transformers,
sentence-transformers. Nothing is ever downloaded at run time: models load from local
paths or installed packages, with the libraries' offline switches on.
"""
