"""``python -m backend.ml_engine.training_orchestrator``: the training app (``backend.apps.train``)."""

import sys

from backend.apps.train import main

sys.exit(main())
