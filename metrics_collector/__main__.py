"""``python -m metrics_collector --trial-name T ... -- CMD ARG...``: wrap one trial command."""

from __future__ import annotations

import sys

from metrics_collector.wrapper import main

if __name__ == "__main__":
    sys.exit(main())
