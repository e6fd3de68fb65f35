"""``python -m backend.web --data-dir D --port P``: the web app without a bot."""

import sys

from backend.apps.web import main

if __name__ == "__main__":
    sys.exit(main())
