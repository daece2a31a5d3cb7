"""Benchmark SHEST inference on the CPU: tile construction, model throughput and peak memory.

Measures, on this machine's CPU:

1. quadruple-tile construction in cells/s, from windows already in memory and with the
   windows read from a slide (the real CMU slide when the shared test data is present,
   else a synthetic one), in the calling thread and in worker processes;
2. model throughput in cells/s for the demo model and for timm's
   ``vit_small_patch14_reg4_dinov2`` (random weights, nothing downloaded);
3. peak resident memory of ``shest infer --model demo`` on a small and a large synthetic
   slide, each run in its own process, beside the size of that run's output arrays.
   Both default slides are larger than the 2048 px overlay thumbnail and have over 100
   batches of cells, so the fixed costs (libraries, model, thumbnail, prefetched
   batches, allocator pools) are the same in both runs;
4. with ``--end-to-end SLIDE CELLS``, the cells/s of ``shest infer --model demo`` on
   that slide for each ``--workers`` value given, each run in a fresh process.

Prints the results as markdown tables. Run from the repository root::

    python benchmarks/inference_benchmark.py [--cells 1024] [--small-side 4096] [--large-side 8192]
    python benchmarks/inference_benchmark.py --end-to-end SLIDE CELLS [--workers 0 1 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CMU = Path(os.environ.get("SHEST_TEST_DATA", ROOT.parent / "shared" / "data")) / "wsi" / "CMU-1-Small-Region.svs"
SPACING_PX = 48
MPP = 0.5


def synthetic_slide(path: Path, side: int, spacing: int = SPACING_PX, seed: int = 0):
    """Write a pyramidal TIFF of purple nuclei on pink tissue and the matching cell table (GeoParquet).

    The TIFF is JPEG-compressed like a scanner's: libtiff memory-maps the file, so the
    pages read count towards resident memory, and an uncompressed file would inflate
    the peak RSS by its own size.
    """
    import geopandas as gpd
    import shapely
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = (232, 182, 212)
    image += rng.integers(0, 12, size=(side, side, 1), dtype=np.uint8)
    centres = np.arange(spacing, side - spacing, spacing, dtype=np.float64)
    xs, ys = np.meshgrid(centres, centres)
    xs = xs.ravel() + rng.uniform(-6, 6, xs.size)
    ys = ys.ravel() + rng.uniform(-6, 6, ys.size)
    radii = rng.uniform(3, 7, (xs.size, 2))
    angles = np.linspace(0, 2 * np.pi, 17)[:-1]
    polygons, bboxes = [], []
    for x, y, (rx, ry) in zip(xs, ys, radii, strict=True):
        rr, cc = ellipse(y, x, ry, rx, shape=image.shape[:2])
        image[rr, cc] = (110, 60, 150)
        ring = np.column_stack([x + rx * np.cos(angles), y + ry * np.sin(angles)])
        polygons.append(shapely.Polygon(ring))
        bboxes.append((x - rx, y - ry, x + rx, y + ry))
    write_pyramid(path, image)
    bboxes = np.asarray(bboxes)
    table = gpd.GeoDataFrame(
        {
            "cell_id": np.arange(1, xs.size + 1, dtype=np.int64),
            "x": xs,
            "y": ys,
            "x_um": xs * MPP,
            "y_um": ys * MPP,
            "area_um2": np.pi * radii[:, 0] * radii[:, 1] * MPP * MPP,
            "bbox_x0": bboxes[:, 0],
            "bbox_y0": bboxes[:, 1],
            "bbox_x1": bboxes[:, 2],
            "bbox_y1": bboxes[:, 3],
        },
        geometry=polygons,
    )
    cells_path = path.with_suffix(".cells.parquet")
    table.to_parquet(cells_path)
    return cells_path, int(xs.size)


def write_pyramid(path: Path, image: np.ndarray) -> None:
    """Write a JPEG-tiled TIFF with one page per level, halving down to under 1,000 px, as scanners do."""
    import tifffile
    from PIL import Image

    with tifffile.TiffWriter(path) as tif:
        level, resolution, index = image, 1e4 / MPP, 0
        while True:
            # subfiletype 1 marks a reduced-resolution page, which OpenSlide takes as a level.
            tif.write(level, tile=(256, 256), photometric="rgb", resolution=(resolution, resolution),
                      resolutionunit="CENTIMETER", subfiletype=0 if index == 0 else 1,
                      compression="jpeg", compressionargs={"level": 85})  # fmt: skip
            index += 1
            if max(level.shape[:2]) < 1000:
                break
            height, width = level.shape[:2]
            level = np.asarray(Image.fromarray(level).resize((width // 2, height // 2), Image.Resampling.BOX))
            resolution /= 2


def bench_tiles(n_cells: int, worker_counts: list[int], batch_size: int = 64) -> list[tuple[str, float]]:
    """Return cells/s of tile construction (windows in memory) and of reading plus construction.

    Reading plus construction is measured in the calling thread, then in each number
    of worker processes, where only the panes are built (tiles are assembled on the
    model's device) and the start of the processes is timed too.
    """
    import shapely

    from shest.celltiles import TileGeometry, build_quadruple_tiles, outline_to_pane, tile_batches
    from shest.celltiles.workers import iter_pane_batches
    from shest.slide import open_slide

    rows = []
    rng = np.random.default_rng(0)
    geometry = TileGeometry(mpp=MPP)
    windows = rng.integers(0, 256, (batch_size, geometry.window_px, geometry.window_px, 3), dtype=np.uint8)
    ring = np.array([[10.0, 10.0], [22.0, 11.0], [21.0, 23.0], [9.0, 20.0], [10.0, 10.0]])
    vertices = [outline_to_pane(ring, 0, 0, geometry.upper)] * batch_size
    build_quadruple_tiles(windows, vertices)
    start = time.perf_counter()
    done = 0
    while done < n_cells:
        build_quadruple_tiles(windows, vertices)
        done += batch_size
    rows.append(("tile construction, windows in memory", done / (time.perf_counter() - start)))

    with tempfile.TemporaryDirectory() as tmp:
        if CMU.exists():
            slide_path, label, slide_mpp = CMU, "CMU-1-Small-Region.svs", None
        else:
            slide_path, label, slide_mpp = Path(tmp) / "synthetic.tif", "synthetic TIFF", MPP
            synthetic_slide(slide_path, 2048)
        with open_slide(slide_path, mpp=slide_mpp) as slide:
            geometry = TileGeometry(mpp=slide.mpp)
            width, height = slide.dimensions
            cx = rng.integers(geometry.half, width - geometry.half, n_cells)
            cy = rng.integers(geometry.half, height - geometry.half, n_cells)
            polygons = np.array([shapely.box(x - 4, y - 3, x + 4, y + 3) for x, y in zip(cx, cy, strict=True)])
            start = time.perf_counter()
            count = sum(len(positions) for positions, _ in tile_batches(slide, cx, cy, polygons, geometry, batch_size))
            rows.append((f"read windows + tile construction ({label})", count / (time.perf_counter() - start)))
            for workers in worker_counts:
                start = time.perf_counter()
                panes = iter_pane_batches(slide, cx, cy, polygons, geometry, batch_size, workers=workers)
                count = sum(len(batch) for batch in panes)
                rows.append(
                    (f"read windows + panes, {workers} worker processes, start included ({label})",
                     count / (time.perf_counter() - start))
                )  # fmt: skip
    return rows


def bench_models(n_cells: int, batch_size: int = 32) -> list[tuple[str, float]]:
    """Return cells/s of the demo network and of a random ViT-S/14 with registers, float32 on the CPU."""
    import timm
    import torch

    from shest.model.demo import build_demo_model

    rows = []
    tiles = torch.randn(batch_size, 3, 224, 224)
    networks = {
        "demo model (ViT 64-d, 2 blocks, + SHEST heads)": build_demo_model().network,
        "vit_small_patch14_reg4_dinov2 (random weights)": timm.create_model(
            "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, num_classes=0
        ).eval(),
    }
    for name, network in networks.items():
        with torch.inference_mode():
            network(tiles)  # the first call at a new batch shape sets up kernels and is not timed
            start = time.perf_counter()
            done = 0
            while done < n_cells:
                network(tiles)
                done += batch_size
        rows.append((name, done / (time.perf_counter() - start)))
    return rows


RUNNER = """
import json, resource, sys, time
from shest.logs import setup_logging
from shest.outputs import infer_slide
setup_logging(0)
start = time.perf_counter()
result = infer_slide(sys.argv[1], sys.argv[2], sys.argv[3], "bench", demo=True, mpp=0.5, batch_size=64, workers=0)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("RssAnon", "RssFile")))
print(json.dumps({"seconds": time.perf_counter() - start, "cells": result.n_cells,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "end_anon_mib": int(status["RssAnon"].split()[0]) / 1024,
                  "end_file_mib": int(status["RssFile"].split()[0]) / 1024}))
"""


def bench_memory(sides: list[int]) -> list[dict]:
    """Run demo inference on synthetic slides in fresh processes and return their peak RSS.

    Tiles are built in the measured process (``workers=0``); worker processes would
    hold their own memory, which this RSS does not include.
    """
    rows = []
    for side in sides:
        with tempfile.TemporaryDirectory() as tmp:
            slide = Path(tmp) / f"synthetic_{side}.tif"
            cells, n_cells = synthetic_slide(slide, side)
            out = subprocess.run(
                [sys.executable, "-c", RUNNER, str(slide), str(cells), str(Path(tmp) / "out")],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            # Output arrays of the demo model: 64-d float16 embedding, 20 int32 genes, class, probability.
            result["output_arrays_mib"] = n_cells * (64 * 2 + 20 * 4 + 2 + 4) / 2**20
            result["side"] = side
            rows.append(result)
    return rows


INFERENCE_LINE = re.compile(r"Inference: (\d+) cells in ([0-9.]+) s")


def bench_end_to_end(slide: Path, cells: Path, worker_counts: list[int], repeats: int) -> list[dict]:
    """Run ``shest infer --model demo`` on a slide in fresh processes; return the inference cells/s of each run.

    The inference stage is timed by ``shest infer`` itself, in its log line
    ``Inference: N cells in S s``, from the first batch request to the last
    prediction. The wall time also covers start-up, reading the cell table and
    writing the outputs. Runs alternate between the worker counts, so changes in
    machine load spread over all of them.
    """
    rows = []
    for repeat in range(repeats):
        for workers in worker_counts:
            with tempfile.TemporaryDirectory() as tmp:
                load = os.getloadavg()[0]
                start = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-m", "shest", "infer", str(slide), "--cells", str(cells), "--model", "demo",
                     "--outdir", tmp, "--workers", str(workers)],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                wall = time.perf_counter() - start
            match = INFERENCE_LINE.search(out.stderr)
            if match is None:
                sys.exit(f"No 'Inference:' line in the log of shest infer:\n{out.stderr[-2000:]}")
            n_cells, seconds = int(match.group(1)), float(match.group(2))
            rows.append({"workers": workers, "repeat": repeat + 1, "cells": n_cells, "inference_s": seconds,
                         "wall_s": wall, "load": load})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1024, help="cells per throughput measurement")
    parser.add_argument("--small-side", type=int, default=4096, help="side of the small synthetic slide, px")
    parser.add_argument("--large-side", type=int, default=8192, help="side of the large synthetic slide, px")
    parser.add_argument("--no-throughput", action="store_true", help="run only the memory measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="tile worker processes to compare")
    parser.add_argument("--end-to-end", nargs=2, type=Path, metavar=("SLIDE", "CELLS"),
                        help="only time shest infer --model demo on this slide and cell table")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count with --end-to-end")
    args = parser.parse_args()

    import torch

    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip

    if args.end_to_end:
        print("| --workers | run | cells | inference (s) | cells/s in inference | wall (s) | load before |")
        print("|---|---|---|---|---|---|---|")
        for row in bench_end_to_end(*args.end_to_end, args.workers, args.repeats):
            print(f"| {row['workers']} | {row['repeat']} | {row['cells']} | {row['inference_s']:.1f} | "
                  f"{row['cells'] / row['inference_s']:.0f} | {row['wall_s']:.1f} | {row['load']:.2f} |")  # fmt: skip
        load = os.getloadavg()
        print(f"\nLoad average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return

    if not args.no_throughput:
        print("| step | cells/s |\n|---|---|")
        for name, rate in bench_tiles(args.cells, args.workers) + bench_models(args.cells // 4):
            print(f"| {name} | {rate:.0f} |")

    print(
        "\n| synthetic slide | cells | wall time (s) | cells/s end to end | peak RSS (MiB) "
        "| RSS at end: anonymous / file-backed (MiB) | output arrays (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in bench_memory([args.small_side, args.large_side]):
        print(
            f"| {row['side']} x {row['side']} px | {row['cells']} | {row['seconds']:.1f} | "
            f"{row['cells'] / row['seconds']:.0f} | {row['peak_rss_mib']:.0f} | "
            f"{row['end_anon_mib']:.0f} / {row['end_file_mib']:.0f} | {row['output_arrays_mib']:.1f} |"
        )
    load = os.getloadavg()
    print(f"\nLoad average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
