"""Time and peak memory of `shest niche` on synthetic whole-slide layouts.

Each layout is a square of tissue at 2500 cells/mm² with round tumour islands of
150-500 µm radius covering 25 % of the area, 85 % of their cells tumour cells.
Lymphocytes are scattered through the stroma, where they are 15 % of the cells.
The layout is written as an inference AnnData with integer counts for a 377-gene
panel (the size of the Xenium human multi-tissue panel) and a 1536-wide float16
embedding, as `shest infer` stores them. `shest niche` then runs in a subprocess
with its default parameters. The script reports its wall time, its peak resident
memory (from wait4) and the time of each analysis step.

Usage::

    python benchmarks/niche_benchmark.py --sizes 100000,1000000 --workdir /tmp/niche_bench

The script prints a markdown table ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated cell counts")
    parser.add_argument("--genes", type=int, default=377, help="genes in X")
    parser.add_argument(
        "--embedding-dim", type=int, default=1536, help="width of obsm['X_embedding'] (0 to leave it out)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("niche_benchmark_work"), help="folder for inputs and outputs"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("niche_args", nargs=argparse.REMAINDER, help="extra arguments for `shest niche` after --")
    return parser.parse_args()


def build_input(n_cells: int, n_genes: int, embedding_dim: int, path: Path) -> None:
    """Write a synthetic inference AnnData (runs in its own process, see :func:`make_input`)."""
    from shest.niche.synthetic import build_anndata, island_layout

    xy, types, _ = island_layout(n_cells, seed=0)
    adata = build_anndata(
        xy, types, n_genes=n_genes, unassigned_fraction=0.05, embedding_dim=embedding_dim, sample=path.stem, seed=0
    )
    adata.write_h5ad(path)


def make_input(n_cells: int, n_genes: int, embedding_dim: int, path: Path) -> float:
    """Build the input in a subprocess and return the seconds it took.

    A child forked from a process holding the multi-GB AnnData would report that
    process's pages in its own peak RSS, so this process stays small.
    """
    start = time.monotonic()
    command = [
        sys.executable,
        __file__,
        "--sizes",
        str(n_cells),
        "--genes",
        str(n_genes),
        "--embedding-dim",
        str(embedding_dim),
        "--build-only",
        str(path),
    ]
    subprocess.run(command, check=True)
    return time.monotonic() - start


def run_niche(h5ad: Path, outdir: Path, extra: list[str]) -> tuple[float, float, int]:
    """Run `shest niche` in a subprocess; return wall seconds, peak RSS in GiB and the exit code."""
    command = [sys.executable, "-m", "shest", "niche", str(h5ad), "--outdir", str(outdir), *extra]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - start
    stderr = process.stderr.read() if process.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(stderr)
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_maxrss / 1024**2, code


def step_seconds(niche_h5ad: Path) -> dict:
    import h5py
    from anndata.io import read_elem

    with h5py.File(niche_h5ad, "r") as f:
        return dict(read_elem(f["uns/shest_niche/seconds"]))


def main() -> int:
    args = parse_args()
    if args.build_only is not None:
        build_input(int(args.sizes), args.genes, args.embedding_dim, args.build_only)
        return 0
    extra = [a for a in args.niche_args if a != "--"]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    rows = []
    for n_cells in sizes:
        h5ad = args.workdir / f"bench{n_cells}.h5ad"
        outdir = args.workdir / f"out{n_cells}"
        build_s = make_input(n_cells, args.genes, args.embedding_dim, h5ad)
        size_gb = h5ad.stat().st_size / 1024**3
        print(f"built {h5ad} ({size_gb:.2f} GiB) in {build_s:.0f} s", file=sys.stderr, flush=True)
        wall, rss, code = run_niche(h5ad, outdir, extra)
        steps = step_seconds(outdir / f"{h5ad.stem}.niche.h5ad") if code == 0 else {}
        rows.append((n_cells, size_gb, wall, rss, code, steps))
        print(f"{n_cells} cells: {wall:.1f} s, peak RSS {rss:.2f} GiB, exit {code}", file=sys.stderr, flush=True)
        if not args.keep:
            h5ad.unlink(missing_ok=True)
            shutil.rmtree(outdir, ignore_errors=True)

    step_names = ["regions", "co_occurrence", "niches", "graph", "enrichment", "moran"]
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; 1-minute load average {load_start:.2f} at the start "
        f"and {os.getloadavg()[0]:.2f} at the end."
    )
    arguments = " ".join(extra) or "defaults"
    print(f"Input: {args.genes} genes, embedding width {args.embedding_dim}; `shest niche` arguments: {arguments}.")
    print()
    print(
        "| cells | input h5ad (GiB) | wall time (s) | peak RSS (GiB) | "
        + " | ".join(f"{s} (s)" for s in step_names)
        + " |"
    )
    print("|---:|---:|---:|---:|" + "---:|" * len(step_names))
    for n_cells, size_gb, wall, rss, code, steps in rows:
        status = "" if code == 0 else f" (exit {code})"
        cells = " | ".join(f"{steps.get(s, float('nan')):.1f}" for s in step_names)
        print(f"| {n_cells:,} | {size_gb:.2f} | {wall:.1f}{status} | {rss:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
