"""``prometheus_client`` chooses its storage when first imported: in a ``dramatiq`` worker
it must not be imported before dramatiq's Prometheus middleware set the multi-process
directory, or the operations' metrics never reach the exposition."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
import dramatiq_bbo as bbo
import dramatiq_bbo.metrics
import dramatiq_bbo.pipeline.actors
bbo.default_middleware()
print("prometheus_client" in sys.modules)
"""


def test_importing_the_library_and_its_default_middleware_leaves_prometheus_client_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False", done.stderr
