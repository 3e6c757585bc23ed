"""The images' figures: sizes (`podman images`) and the predictor's cold start (podman run -> model ready) over
five starts, as the chart runs it (uid 10001, read-only root), serving a real small model folder; the explainer's
cold start next to it. Run by `make bench-images` after `make images`.

Targets (issue 15): the predictor image at most 800 MB, ready at most 3 s after `podman run` on these 2 cores.
"""

import statistics
import sys
import tempfile
from pathlib import Path

from tests.helpers.containers import COMPONENTS, SERVING, Container, podman

STARTS = 5


def main() -> int:
    from tests.helpers.artifacts import detector_artifact

    for image in (SERVING, COMPONENTS):
        size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
        print(f"{image}: {size / 1e6:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        models = detector_artifact(Path(tmp) / "models")
        starts = []
        for _ in range(STARTS):
            container = Container(models)
            starts.append(container.cold_start)
            container.stop()
        print(f"predictor cold start over {STARTS} starts: median {statistics.median(starts):.2f} s, "
              f"max {max(starts):.2f} s ({', '.join(f'{s:.2f}' for s in starts)})")  # fmt: skip
        explainer = Container(models, COMPONENTS, "explain")
        print(f"explainer cold start (component image, torch): {explainer.cold_start:.2f} s")
        explainer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
