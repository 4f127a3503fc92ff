"""``python -m metrics_collector --trial-name T ... -- CMD ARG...``: wrap one trial command.

``python -m metrics_collector --sidecar ...`` runs the sidecar instead (metrics_collector.sidecar).
With KATIB_TERMINATION_MESSAGE_PATH set (in a pod), the wrapper's result is copied there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    head = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if "--sidecar" in head:
        from metrics_collector.sidecar import main as sidecar_main

        sys.exit(sidecar_main())
    from metrics_collector.wrapper import main

    code = main()
    if os.environ.get("KATIB_TERMINATION_MESSAGE_PATH") and "--trial-dir" in head:
        # in a pod: the result goes where the Kubernetes executor reads it (pod status)
        from metrics_collector.sidecar import TERMINATION_MESSAGE_ENV, write_termination_message

        trial_dir = Path(head[head.index("--trial-dir") + 1])
        write_termination_message(trial_dir / "result.json", os.environ[TERMINATION_MESSAGE_ENV])
    sys.exit(code)
