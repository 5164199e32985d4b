"""``python -m aigw.worker``: serve local models (see ``aigw.worker.main``)."""

from aigw.worker.main import main

raise SystemExit(main())
