"""The response cache: exact (L1 memory, L2 Redis) and semantic, with single-flight."""

import os

# A semantic search is one matrix-vector product on the event loop; BLAS threads fighting
# over two cores made it stall (8 ms instead of 0.3 ms, bench/RESULTS.md). This must be
# set before numpy loads, which happens only when a model turns the semantic cache on.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
