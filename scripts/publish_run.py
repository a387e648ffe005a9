"""Copy a finished run's results into docs/results/<name>/ for committing.

    python scripts/publish_run.py RUN_DIR docs/results/NAME

Writes results.json (compact, ROC curves thinned to every 4th grid point), re-renders report.md
and the figures from it, and copies the vulnerable-points thumbnails and config.yaml. The HTML
report (the same figures, inlined) is left out; `privquant report docs/results/NAME` rebuilds it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from privquant.report import render_report
from privquant.results import AuditResults


def main() -> None:
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = AuditResults.load(run).thinned()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "figures/vulnerable.png"):
        if (run / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / name, out / name)
    results.save(out / "results.json", compact=True)
    render_report(results, out)
    (out / "report.html").unlink()
    print(
        f"wrote {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
