"""Speed and memory of nuclear segmentation.

1. Watershed throughput: megapixels per second per core at the resolution it runs
   (0.5 µm/px), on the tiles of CMU-1-Small-Region.svs and of a synthetic slide.
   "segment" times the backend alone; "tile" adds reading, colour deconvolution,
   measurements and outline tracing (everything ``shest segment`` does per tile).
   Pixels are counted at the segmentation resolution, overlaps included. Rates use
   the process CPU time, so they are per core and less sensitive to other load.
2. Peak resident memory of ``shest segment`` (a fresh process each) on the small real
   slide and on a large synthetic pyramidal TIFF written tile by tile.
3. Cellpose on the CPU with a small stand-in network (fixed kernels, not Cellpose-SAM),
   which times Cellpose's own pre- and post-processing. With ``--cpsam`` it also times
   the Cellpose-SAM architecture with random weights, whose speed does not depend on
   the weight values. These are demo networks, so their nuclei mean nothing.
   GPU numbers are pending a GPU.

Run from the repository root:

    python benchmarks/segmentation_speed.py [--large-px 12288] [--cpsam]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shest.segmentation.calibration import calibrate
from shest.segmentation.stand_in import stand_in_network_class
from shest.segmentation.synthetic import render_he, scatter_nuclei, write_pyramidal_tiff
from shest.segmentation.watershed import WatershedSegmenter
from shest.segmentation.wsi import plan_reads, read_box, segment_tile
from shest.slide import open_slide
from shest.tiling import make_tile_plan

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHEST_TEST_DATA", REPO.parent / "shared" / "data"))
CMU = DATA / "wsi" / "CMU-1-Small-Region.svs"
log = logging.getLogger("segmentation_speed")


def full_plan(slide, tile_size_um: float = 512.0, overlap_um: float = 32.0):
    return make_tile_plan(
        np.ones((1, 1), dtype=bool), float(max(slide.dimensions)), slide.dimensions, slide.mpp,
        slide.path.stem, target_mpp=0.5, tile_size_um=tile_size_um, overlap_um=overlap_um,
    )


def watershed_throughput(slide_path: Path, label: str, max_tiles: int = 40) -> dict:
    """Time the watershed backend alone and the whole per-tile work on the tiles of a slide."""
    with open_slide(slide_path) as slide:
        plan = full_plan(slide)
        reads = plan_reads(slide, 0.5)
        segmenter = WatershedSegmenter()
        stains = calibrate(slide, segmenter, reads)
        tiles = plan.tiles[:max_tiles]
        images = [read_box(slide, tile.box, reads)[0] for tile in tiles]
        megapixels = sum(image.shape[0] * image.shape[1] for image in images) / 1e6

        cpu, wall = time.process_time(), time.perf_counter()
        for image in images:
            segmenter.segment(image, reads.mpp)
        segment_cpu, segment_wall = time.process_time() - cpu, time.perf_counter() - wall

        cpu, wall = time.process_time(), time.perf_counter()
        nuclei = sum(len(segment_tile(slide, tile, segmenter, stains, reads).columns["x"]) for tile in tiles)
        tile_cpu, tile_wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "slide": label,
        "mpp": round(reads.mpp, 4),
        "tiles": len(tiles),
        "megapixels": round(megapixels, 2),
        "nuclei": nuclei,
        "segment_mpx_per_cpu_s": megapixels / segment_cpu,
        "segment_mpx_per_wall_s": megapixels / segment_wall,
        "tile_mpx_per_cpu_s": megapixels / tile_cpu,
        "tile_mpx_per_wall_s": megapixels / tile_wall,
    }


def make_plan_file(slide_path: Path, plan_path: Path, mpp: float | None = None) -> int:
    with open_slide(slide_path, mpp=mpp) as slide:
        plan = full_plan(slide)
    plan.save(plan_path)
    return len(plan)


def peak_rss(slide_path: Path, workdir: Path, label: str) -> dict:
    """Run ``shest segment`` over the whole slide in a fresh process; return its peak RSS and time."""
    plan_path = workdir / f"{slide_path.stem}.tiles.json"
    tiles = make_plan_file(slide_path, plan_path)
    command = [sys.executable, "-m", "shest", "segment", str(slide_path), "--plan", str(plan_path),
               "--outdir", str(workdir / "out"), "--sample", slide_path.stem, "--backend", "watershed"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    if status != 0:
        sys.exit(f"shest segment failed on {slide_path}:\n{stderr}")
    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
    import pyarrow.parquet as pq

    nuclei = pq.read_metadata(workdir / "out" / f"{slide_path.stem}.cells.parquet").num_rows
    return {
        "slide": label,
        "size_px": f"{width} x {height}",
        "megapixels": round(width * height / 1e6, 1),
        "tiles": tiles,
        "nuclei": nuclei,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "wall_s": elapsed,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def cellpose_cpu(cpsam: bool) -> list[dict]:
    """Time Cellpose on the CPU with the stand-in network (and optionally the Cellpose-SAM architecture)."""
    import torch
    from cellpose import models

    from shest.segmentation.cellpose_backend import CellposeParams, CellposeSegmenter

    torch.set_num_threads(os.cpu_count() or 1)
    nuclei = scatter_nuclei((512, 512), 0.5, seed=1)
    rgb, _ = render_he((512, 512), nuclei)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stand_in.pth"
        network_class = stand_in_network_class()
        torch.save(network_class().state_dict(), path)
        original = models.CPSAM
        models.CPSAM = network_class
        try:
            segmenter = CellposeSegmenter(CellposeParams(model=str(path)), device="cpu")
            segmenter.segment(rgb, 0.5)  # warm-up: model load and first call
            start = time.perf_counter()
            labels = segmenter.segment(rgb, 0.5)
            elapsed = time.perf_counter() - start
        finally:
            models.CPSAM = original
        rows.append({
            "network": "stand-in (fixed kernels, demo)", "image_px": "512 x 512", "seconds": elapsed,
            "mpx_per_s": 0.262144 / elapsed, "nuclei": int(labels.max()),
        })
    if cpsam:
        model = models.CellposeModel.__new__(models.CellposeModel)
        model.device = torch.device("cpu")
        model.gpu = False
        model.backbone = "sam_vitl"
        start = time.perf_counter()
        model.net = models.CPSAM(dtype=torch.float32).to(model.device)
        build = time.perf_counter() - start
        segmenter = CellposeSegmenter(CellposeParams(model="cpsam (random weights)"), device="cpu", model=model)
        tile = rgb[:256, :256]
        start = time.perf_counter()
        segmenter.segment(tile, 0.5)
        elapsed = time.perf_counter() - start
        rows.append({
            "network": f"Cellpose-SAM architecture, random weights (built in {build:.0f} s; demo)",
            "image_px": "256 x 256", "seconds": elapsed, "mpx_per_s": 0.065536 / elapsed, "nuclei": None,
        })
    return rows




def markdown(throughput: list[dict], memory: list[dict], cellpose: list[dict]) -> str:
    lines = [
        "Watershed throughput (one process; Mpx at the segmentation resolution, tile overlaps included):",
        "",
        "| slide | µm/px | tiles | Mpx | nuclei | segment Mpx/s per core (wall) | whole tile Mpx/s per core (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in throughput:
        lines.append(
            f"| {r['slide']} | {r['mpp']} | {r['tiles']} | {r['megapixels']} | {r['nuclei']} | "
            f"**{r['segment_mpx_per_cpu_s']:.2f}** ({r['segment_mpx_per_wall_s']:.2f}) | "
            f"**{r['tile_mpx_per_cpu_s']:.2f}** ({r['tile_mpx_per_wall_s']:.2f}) |"
        )
    lines += [
        "",
        "`shest segment` over the whole slide, watershed, 512 µm tiles, a fresh process each:",
        "",
        "| slide | size (px) | Mpx | tiles | nuclei | peak RSS (MiB) | wall (s) | CPU (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in memory:
        lines.append(
            f"| {r['slide']} | {r['size_px']} | {r['megapixels']} | {r['tiles']} | {r['nuclei']} | "
            f"**{r['peak_rss_mib']:.0f}** | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
        )
    lines += [
        "",
        "Cellpose on the CPU (demo networks, not trained weights; GPU numbers pending a GPU):",
        "",
        "| network | image | seconds | Mpx/s | nuclei found |",
        "|---|---|---|---|---|",
    ]
    for r in cellpose:
        lines.append(
            f"| {r['network']} | {r['image_px']} | {r['seconds']:.2f} | {r['mpx_per_s']:.3f} | "
            f"{'' if r['nuclei'] is None else r['nuclei']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-px", type=int, default=12288, help="side of the large synthetic slide in pixels (0.5 µm/px)")
    parser.add_argument("--cpsam", action="store_true", help="also time the Cellpose-SAM architecture (random weights) on the CPU")
    parser.add_argument("--skip-memory", action="store_true", help="skip the whole-slide peak RSS runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("shest").setLevel(logging.WARNING)
    if not CMU.exists():
        sys.exit(f"{CMU} not found; set SHEST_TEST_DATA to the data folder.")

    with tempfile.TemporaryDirectory(prefix="shest-speed-") as tmp:
        workdir = Path(tmp)
        synthetic = workdir / "synthetic_small.tif"
        write_pyramidal_tiff(synthetic, (4096, 4096), 0.5, scatter_nuclei((4096, 4096), 0.5, seed=1), levels=2)
        throughput = [watershed_throughput(CMU, "CMU-1-Small-Region (skin)"), watershed_throughput(synthetic, "synthetic")]
        log.info("throughput: %s", throughput)

        memory = []
        if not args.skip_memory:
            memory.append(peak_rss(CMU, workdir / "small", "CMU-1-Small-Region"))
            large = workdir / "synthetic_large.tif"
            start = time.perf_counter()
            side = args.large_px
            write_pyramidal_tiff(large, (side, side), 0.5, scatter_nuclei((side, side), 0.5, seed=2), levels=4)
            log.info("wrote %s (%.0f MB) in %.0f s", large, large.stat().st_size / 1e6, time.perf_counter() - start)
            memory.append(peak_rss(large, workdir / "large", "synthetic pyramidal TIFF"))
        cellpose = cellpose_cpu(args.cpsam)

    print(markdown(throughput, memory, cellpose))
    if args.json:
        args.json.write_text(json.dumps({"throughput": throughput, "memory": memory, "cellpose": cellpose}, indent=1) + "\n")


if __name__ == "__main__":
    main()
