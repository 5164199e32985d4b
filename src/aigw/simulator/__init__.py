"""An upstream simulator: a test and benchmark tool, not a model.

A real HTTP server (the project's own ``aigw.http.server``) that speaks the OpenAI
(chat, completions, embeddings, models; Azure deployment paths too) and Anthropic
Messages wire formats, streaming included, and answers with deterministic canned
text and hash-derived embeddings. Latency, streaming token rate, reply length and
faults (error statuses, hangs, connection resets, streams cut short) are set by CLI
flags, at runtime by ``POST /sim/config``, or per request by ``x-sim-*`` headers;
``GET /sim/stats`` shows what it was sent. Tests, ``bench/`` and newcomers without
API keys point aigw at it::

    python -m aigw.simulator --port 0 --latency-ms 50 --tokens-per-s 100
"""

from aigw.simulator.faults import Fault, parse_fault
from aigw.simulator.knobs import Knobs
from aigw.simulator.server import SimulatorServer, main

__all__ = ["Fault", "Knobs", "SimulatorServer", "main", "parse_fault"]
