"""``python -m aigw.simulator``: run the upstream simulator (a test/bench tool)."""

from aigw.simulator.server import main

raise SystemExit(main())
