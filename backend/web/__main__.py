"""``python -m backend.web --data-dir D --port P``: the web app without a bot (``backend.apps.web``)."""

import sys

from backend.apps.web import main

sys.exit(main())
