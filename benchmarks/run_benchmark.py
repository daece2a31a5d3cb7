"""Wall time and peak memory of ``shest run`` on synthetic slides of two sizes.

Each slide is a tiled, pyramidal, JPEG-compressed TIFF at 0.5 µm/px, covered with
non-touching synthetic nuclei every 14 µm and written tile by tile. ``shest run``
(watershed segmentation, demo model) runs in a fresh process per slide; its peak
resident memory comes from ``os.wait4``. If memory stayed flat apart from the output
arrays, the peak would grow by roughly the size of the per-cell outputs, not with the
slide's area.

Run from the repository root:

    python benchmarks/run_benchmark.py [--sizes 4096 12288] [--niche] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shest.segmentation.synthetic import scatter_nuclei, write_pyramidal_tiff

MPP = 0.5


def build_slide(path: Path, side: int) -> float:
    """Write a square synthetic slide of ``side`` pixels; return the seconds it took."""
    start = time.perf_counter()
    levels = max(1, min(5, side.bit_length() - 11))
    write_pyramidal_tiff(path, (side, side), MPP, scatter_nuclei((side, side), MPP, seed=side), levels=levels)
    return time.perf_counter() - start


def run_once(slide: Path, outdir: Path, niche: bool) -> dict:
    """Run ``shest run`` on one slide in a fresh process and measure it."""
    command = [sys.executable, "-m", "shest", "run", "--wsi", str(slide), "--outdir", str(outdir),
               "--segmenter", "watershed", "--model", "demo"]
    if niche:
        command.append("--niche")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"shest run failed on {slide}:\n{stderr[-4000:]}")

    stage_seconds = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] in ("ran", "skipped") and parts[3] == "s":
            stage_seconds[parts[0]] = float(parts[2])

    import anndata

    adata = anndata.read_h5ad(outdir / "inference" / f"{slide.stem}.h5ad", backed="r")
    return {
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "wall_s": elapsed,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "stages": stage_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 12288], help="slide sides in pixels")
    parser.add_argument("--niche", action="store_true", help="also run the niche stage")
    parser.add_argument("--workdir", type=Path, default=None, help="keep slides and outputs here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shest-run-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for side in args.sizes:
            slide = workdir / f"synthetic_{side}.tif"
            build_s = build_slide(slide, side) if not slide.exists() else 0.0
            result = run_once(slide, workdir / f"out_{side}", args.niche)
            result.update(side=side, megapixels=side * side / 1e6, build_s=build_s)
            rows.append(result)
            print(f"# {side}: {result}", file=sys.stderr)

    stages = sorted({name for row in rows for name in row["stages"]})
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average at the end {os.getloadavg()[0]:.1f}\n")
    header = ["slide (px)", "Mpx", "cells", "wall (s)", "CPU (s)", "peak RSS (MiB)", *[f"{s} (s)" for s in stages]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{row['side']:,} x {row['side']:,}", f"{row['megapixels']:.0f}", f"{row['cells']:,}",
                 f"{row['wall_s']:.0f}", f"{row['cpu_s']:.0f}", f"{row['peak_rss_mib']:,.0f}",
                 *[f"{row['stages'].get(s, float('nan')):.0f}" for s in stages]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
