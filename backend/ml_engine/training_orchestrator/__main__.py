import sys

from backend.ml_engine.training_orchestrator.cli import main

sys.exit(main())
