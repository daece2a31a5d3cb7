"""Wall time and peak memory of `shest qc` and of tile planning on large synthetic slides.

Builds pyramidal, tiled, JPEG-compressed TIFFs (0.25 µm/px, mostly glass with blobs of
H&E-like texture) tile by tile, so no full image is ever in memory, then runs

- ``shest qc SLIDE`` as a subprocess, with its peak RSS from ``os.wait4``;
- tile planning alone (``make_tile_plan`` on the tissue mask that ``shest qc`` wrote,
  then ``split``) in a fresh subprocess, with its peak RSS and the peak of Python and
  NumPy allocations during planning (tracemalloc).

Usage::

    python benchmarks/qc_benchmark.py                    # 4,000 and 40,000 px slides
    python benchmarks/qc_benchmark.py --sizes 4000 --keep --workdir /tmp/qcbench

The results are printed as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

MPP = 0.25
TILE = 256
# Level-0 pixels per cell of the low-resolution tissue layout.
LAYOUT_CELL = 64
BACKGROUND = (243, 242, 245)
STROMA = (215, 130, 185)
NUCLEUS = (110, 60, 150)

PLAN_SCRIPT = """
import json, sys, time, tracemalloc
import numpy as np
from PIL import Image
from shest.tiling import make_tile_plan
qc = json.load(open(sys.argv[1]))
mask = np.asarray(Image.open(sys.argv[2])) > 0
tracemalloc.start()
start = time.perf_counter()
plan = make_tile_plan(mask, qc["thumbnail"]["downsample"], (qc["slide"]["width"], qc["slide"]["height"]),
                      qc["slide"]["mpp_x"], "bench").split(int(sys.argv[3]))
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": seconds, "tiles": len(plan), "traced_peak_bytes": peak}))
"""


def tissue_layout(size: int, seed: int = 0) -> np.ndarray:
    """Boolean layout, one cell per LAYOUT_CELL level-0 pixels, with about 20% tissue in blobs."""
    cells = -(-size // LAYOUT_CELL)
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.random((cells, cells)), sigma=max(1.0, cells / 25))
    return noise > np.quantile(noise, 0.8)


def tile_image(layout: np.ndarray, size: int, downsample: int, row: int, col: int, rng) -> np.ndarray:
    """Return tile (row, col) of the level at ``downsample``, TILE x TILE RGB, with glass outside the image."""
    ys = (row * TILE + np.arange(TILE)) * downsample
    xs = (col * TILE + np.arange(TILE)) * downsample
    inside_y, inside_x = ys < size, xs < size
    cell_y = np.minimum(ys // LAYOUT_CELL, layout.shape[0] - 1)
    cell_x = np.minimum(xs // LAYOUT_CELL, layout.shape[1] - 1)
    tissue = layout[np.ix_(cell_y, cell_x)] & np.outer(inside_y, inside_x)
    out = np.empty((TILE, TILE, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    if not tissue.any():
        return out
    texture = np.empty((TILE, TILE, 3), dtype=np.int16)
    texture[:] = STROMA
    radius = max(1, round(3 / downsample))
    count = min(4000, 60 * downsample * downsample)
    centres = rng.integers(0, TILE, (count, 2))
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            texture[np.clip(centres[:, 0] + dy, 0, TILE - 1), np.clip(centres[:, 1] + dx, 0, TILE - 1)] = NUCLEUS
    texture += rng.integers(-8, 9, texture.shape, dtype=np.int16)
    out[tissue] = np.clip(texture, 0, 255).astype(np.uint8)[tissue]
    return out


def level_tiles(layout: np.ndarray, size: int, downsample: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    level_size = -(-size // downsample)
    rows = -(-level_size // TILE)
    for row in range(rows):
        for col in range(rows):
            yield tile_image(layout, size, downsample, row, col, rng)


def write_slide(path: Path, size: int) -> None:
    """Write a square pyramidal TIFF of ``size`` px: levels as pages, down to under 1,000 px."""
    layout = tissue_layout(size)
    downsamples = [1]
    while size // downsamples[-1] >= 1000:
        downsamples.append(downsamples[-1] * 2)
    resolution = (1e4 / MPP, 1e4 / MPP)
    with tifffile.TiffWriter(path, bigtiff=size > 20000) as tif:
        for index, ds in enumerate(downsamples):
            level_size = -(-size // ds)
            tif.write(
                level_tiles(layout, size, ds, seed=index),
                shape=(level_size, level_size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                subfiletype=0 if index == 0 else 1,
                resolution=resolution if index == 0 else None,
                resolutionunit="CENTIMETER" if index == 0 else None,
            )


def run_with_rusage(command: list[str]) -> tuple[float, int, str, str]:
    """Run a command and wait for it with os.wait4, which reports that child's own peak RSS (KiB on Linux)."""
    out_file = tempfile.TemporaryFile(mode="w+")
    err_file = tempfile.TemporaryFile(mode="w+")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=out_file, stderr=err_file, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out_file.seek(0)
    err_file.seek(0)
    stdout, stderr = out_file.read(), err_file.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr}")
    return seconds, int(usage.ru_maxrss), stdout, stderr


def benchmark(size: int, workdir: Path, chunks: int) -> dict:
    slide = workdir / f"synthetic_{size}.tif"
    start = time.perf_counter()
    write_slide(slide, size)
    build_s = time.perf_counter() - start

    outdir = workdir / f"qc_{size}"
    shest = [sys.executable, "-m", "shest", "qc", str(slide), "--outdir", str(outdir), "--chunks", str(chunks)]
    qc_s, qc_rss, _, _ = run_with_rusage(shest)

    sample = slide.stem
    qc = json.loads((outdir / f"{sample}.qc.json").read_text())
    plan_cmd = [
        sys.executable, "-c", PLAN_SCRIPT,
        str(outdir / f"{sample}.qc.json"), str(outdir / f"{sample}.tissue_mask.png"), str(chunks),
    ]
    _, plan_rss, plan_out, _ = run_with_rusage(plan_cmd)
    plan = json.loads(plan_out)

    return {
        "size": size,
        "file_mb": slide.stat().st_size / 2**20,
        "levels": qc["slide"]["level_count"],
        "build_s": build_s,
        "qc_s": qc_s,
        "qc_rss_mb": qc_rss / 1024,
        "thumbnail": f"{qc['thumbnail']['width']} x {qc['thumbnail']['height']}",
        "tissue_mm2": qc["tissue_area_mm2"],
        "focus_tiles": qc["metrics"]["focus_tiles"],
        "tiles": plan["tiles"],
        "plan_s": plan["seconds"],
        "plan_traced_mb": plan["traced_peak_bytes"] / 2**20,
        "plan_rss_mb": plan_rss / 1024,
    }


def markdown(rows: list[dict]) -> str:
    header = (
        "| slide (px) | file (MiB) | levels | thumbnail (px) | tissue (mm²) | focus tiles | plan tiles "
        "| `shest qc` wall (s) | `shest qc` peak RSS (MiB) | plan wall (s) | plan allocations peak (MiB) "
        "| plan process peak RSS (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['size']:,} x {r['size']:,} | {r['file_mb']:.0f} | {r['levels']} | {r['thumbnail']} | {r['tissue_mm2']:.1f} "
        f"| {r['focus_tiles']} | {r['tiles']} | {r['qc_s']:.1f} | {r['qc_rss_mb']:.0f} | {r['plan_s']:.3f} "
        f"| {r['plan_traced_mb']:.1f} | {r['plan_rss_mb']:.0f} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000], help="slide sides in pixels")
    parser.add_argument("--chunks", type=int, default=8, help="chunks the plan is split into")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the slides (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the slides and QC outputs")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shest_qc_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for size in args.sizes:
            row = benchmark(size, workdir, args.chunks)
            print(f"{size} px: slide built in {row['build_s']:.0f} s", file=sys.stderr)
            rows.append(row)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"1-minute load average before the runs: {load_before:.2f}\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
