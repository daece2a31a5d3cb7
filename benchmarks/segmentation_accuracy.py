"""Score a segmentation backend on annotated H&E tiles, and check seams on a real slide.

Accuracy: every annotated tile is opened as a slide, planned as one tile, segmented
through the same code as ``shest segment`` and its nucleus outlines (the polygons
written to the cell table) are rasterised on the annotation's pixel grid. Reported
per image and overall:

- detection precision, recall and F1: a prediction matches an annotated nucleus when
  their IoU is at least 0.5 (a one-to-one match, because IoU > 0.5 is unique);
- Dice of the union of nuclei against the union of annotations;
- aggregated Jaccard index (AJI, Kumar et al., IEEE TMI 2017): every annotated nucleus
  is paired with the prediction of highest IoU; intersections over unions summed,
  and unpaired predictions added to the union.

"Overall" pools the counts of all images for precision, recall and F1. It averages
Dice and AJI over images, as the MoNuSeg challenge does, and also gives the pooled AJI.

A second table sorts the errors. An annotated nucleus without a match is "missed"
when predictions cover under 30 % of it, "merged" when at least half of it lies in one
prediction that contains at least half of another annotated nucleus too, and "outline"
otherwise (found, but with IoU under 0.5). A prediction without a match is "on
background" when under 30 % of it lies on annotated nuclei, "other" otherwise
(merges and fragments).

Data: MoNuSeg tiles (Aperio ImageScope XML outlines, µm/px from each XML's
MicronsPerPixel) and CPM-15 (ASCII label mask; the 20x tile is taken as 0.5 µm/px),
found under ``$SHEST_TEST_DATA/nuclei`` (default ``../shared/data/nuclei`` beside the
repository).

Seam check (``--seam-check``): CMU-1-Small-Region.svs is segmented over plans with two
tile sizes; the share of nuclei of each run matched by a nucleus of the other at
IoU >= 0.5 is reported (target: at least 98 %).

Examples
--------
    python benchmarks/segmentation_accuracy.py
    python benchmarks/segmentation_accuracy.py --segmentation-mpp native
    python benchmarks/segmentation_accuracy.py --set split_h_um=0.4 --set threshold_scale=1.1
    python benchmarks/segmentation_accuracy.py --set split_level_factors=1.25,1.5,2 --set outline_fraction=none
    python benchmarks/segmentation_accuracy.py --seam-check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import sparse
from skimage.draw import polygon as fill_polygon

from shest.segmentation.runner import segment_slide
from shest.slide import open_slide
from shest.tiling import make_tile_plan

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHEST_TEST_DATA", REPO.parent / "shared" / "data"))
CPM15_MPP = 0.5
MATCH_IOU = 0.5
# Error classes: below this covered share an annotated nucleus is missed, and a
# prediction lies on background.
ERROR_COVER = 0.3
log = logging.getLogger("segmentation_accuracy")


@dataclass
class AnnotatedTile:
    name: str
    image_path: Path
    mpp: float
    labels: np.ndarray


def load_monuseg(xml_path: Path) -> AnnotatedTile:
    """Read a MoNuSeg tile and rasterise its Aperio XML outlines into a label image."""
    image_path = xml_path.with_suffix(".tif")
    root = ET.parse(xml_path).getroot()
    mpp = float(root.get("MicronsPerPixel"))
    with Image.open(image_path) as image:
        width, height = image.size
    labels = np.zeros((height, width), dtype=np.int32)
    count = 0
    for region in root.iter("Region"):
        vertices = np.array([(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")])
        if len(vertices) < 3:
            continue
        rows, cols = fill_polygon(vertices[:, 1], vertices[:, 0], labels.shape)
        count += 1
        labels[rows, cols] = count
    return AnnotatedTile(xml_path.stem, image_path, mpp, labels)


def load_cpm15(mask_path: Path) -> AnnotatedTile:
    """Read a CPM-15 tile and its ASCII label mask (first line 'width height', then one label a line, x fastest)."""
    image_path = mask_path.with_name(mask_path.name.replace("_mask.txt", ".png"))
    with open(mask_path, encoding="ascii") as handle:
        width, height = (int(v) for v in handle.readline().split())
        values = np.loadtxt(handle, dtype=np.int32)
    return AnnotatedTile(f"cpm15-{image_path.stem}", image_path, CPM15_MPP, values.reshape(height, width))


def annotated_tiles() -> list[AnnotatedTile]:
    tiles = [load_monuseg(p) for p in sorted((DATA / "nuclei" / "monuseg").glob("*.xml"))]
    tiles += [load_cpm15(p) for p in sorted((DATA / "nuclei" / "cpm15").glob("*_mask.txt"))]
    if not tiles:
        sys.exit(f"No annotated tiles under {DATA / 'nuclei'}; set SHEST_TEST_DATA to the data folder.")
    return tiles


def build_segmenter(args: argparse.Namespace):
    if args.backend == "cellpose":
        from shest.segmentation.cellpose_backend import CellposeParams, CellposeSegmenter

        return CellposeSegmenter(CellposeParams(model=args.cellpose_model, diameter_um=args.diameter_um), device=args.device)
    from shest.segmentation.watershed import WatershedParams, WatershedSegmenter

    names = {f.name for f in fields(WatershedParams)}
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in names:
            sys.exit(f"--set {item}: unknown watershed parameter; choose from {sorted(names)}")
        if value.lower() == "none":
            overrides[key] = None
        elif key == "split_level_factors":
            overrides[key] = tuple(float(v) for v in value.split(",") if v)
        else:
            overrides[key] = float(value)
    return WatershedSegmenter(WatershedParams(**overrides))


def segment_whole_image(path: Path, mpp: float, segmenter, segmentation_mpp: float | None):
    """Segment an image file as a one-tile slide and return its cell table and metadata."""
    with open_slide(path, mpp=mpp) as slide:
        width, height = slide.dimensions
        side_um = max(width, height) * slide.mpp
        target = segmentation_mpp or 0.5
        plan = make_tile_plan(
            np.ones((1, 1), dtype=bool), float(max(width, height)), (width, height), slide.mpp, path.stem,
            target_mpp=max(target, slide.mpp), tile_size_um=side_um + 64.0, overlap_um=32.0,
        )
        result = segment_slide(slide, plan, segmenter, "benchmark", segmentation_mpp=segmentation_mpp)
    return result.table, result.metadata


def rasterise(table, shape: tuple[int, int]) -> np.ndarray:
    """Fill each outline (continuous level-0 coordinates) into a label image; later ids overwrite earlier ones."""
    labels = np.zeros(shape, dtype=np.int32)
    for cell_id, polygon in zip(table["cell_id"], table.geometry):
        ring = np.asarray(polygon.exterior.coords)
        # Continuous coordinates -> pixel-centre indices.
        rows, cols = fill_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
        labels[rows, cols] = int(cell_id)
    return labels


def score(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Return detection, Dice and AJI counts and scores of a predicted label image."""
    _, truth = np.unique(truth, return_inverse=True)
    _, predicted = np.unique(predicted, return_inverse=True)
    truth = truth.reshape(-1)
    predicted = predicted.reshape(-1)
    n_truth, n_pred = int(truth.max()), int(predicted.max())
    counts = sparse.coo_matrix(
        (np.ones(truth.size, dtype=np.int64), (truth, predicted)), shape=(n_truth + 1, n_pred + 1)
    ).toarray()
    truth_area = counts.sum(axis=1)[1:]
    pred_area = counts.sum(axis=0)[1:]
    intersection = counts[1:, 1:].astype(np.float64)
    union = truth_area[:, None] + pred_area[None, :] - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    true_positives = int((iou >= MATCH_IOU).sum()) if iou.size else 0

    aji_intersection = aji_union = 0.0
    used = np.zeros(n_pred, dtype=bool)
    for i in range(n_truth):
        if n_pred and iou[i].max() > 0:
            j = int(iou[i].argmax())
            aji_intersection += intersection[i, j]
            aji_union += union[i, j]
            used[j] = True
        else:
            aji_union += truth_area[i]
    aji_union += pred_area[~used].sum()

    foreground_truth = truth > 0
    foreground_pred = predicted > 0
    overlap = int((foreground_truth & foreground_pred).sum())
    total = int(foreground_truth.sum() + foreground_pred.sum())
    return {
        "annotated": n_truth,
        "predicted": n_pred,
        "tp": true_positives,
        "aji_intersection": aji_intersection,
        "aji_union": aji_union,
        "dice_overlap": overlap,
        "dice_total": total,
        **rates(true_positives, n_truth, n_pred),
        "dice": 2 * overlap / total if total else 0.0,
        "aji": aji_intersection / aji_union if aji_union else 0.0,
        **classify_errors(intersection, iou, truth_area, pred_area),
    }


def classify_errors(intersection: np.ndarray, iou: np.ndarray, truth_area: np.ndarray, pred_area: np.ndarray) -> dict:
    """Sort unmatched annotated nuclei and predictions into the error classes of the module docstring."""
    n_truth, n_pred = intersection.shape
    if n_truth == 0 or n_pred == 0:
        return {"missed": n_truth, "merged": 0, "outline": 0, "fp_background": n_pred, "fp_other": 0}
    matched_truth = (iou >= MATCH_IOU).any(axis=1)
    matched_pred = (iou >= MATCH_IOU).any(axis=0)
    covered = intersection.sum(axis=1) / np.maximum(truth_area, 1)
    share_in_pred = intersection / np.maximum(truth_area, 1)[:, None]
    main_pred = share_in_pred.argmax(axis=1)
    mostly_inside = share_in_pred.max(axis=1) >= 0.5
    # Annotated nuclei that lie mostly inside each prediction.
    nuclei_per_prediction = np.bincount(main_pred[mostly_inside], minlength=n_pred)
    missed = ~matched_truth & (covered < ERROR_COVER)
    merged = ~matched_truth & ~missed & mostly_inside & (nuclei_per_prediction[main_pred] >= 2)
    outline = ~matched_truth & ~missed & ~merged
    on_truth = intersection.sum(axis=0) / np.maximum(pred_area, 1)
    background = ~matched_pred & (on_truth < ERROR_COVER)
    return {
        "missed": int(missed.sum()),
        "merged": int(merged.sum()),
        "outline": int(outline.sum()),
        "fp_background": int(background.sum()),
        "fp_other": int((~matched_pred & ~background).sum()),
    }


def rates(tp: int, annotated: int, predicted: int) -> dict:
    return {
        "precision": tp / predicted if predicted else 0.0,
        "recall": tp / annotated if annotated else 0.0,
        "f1": 2 * tp / (annotated + predicted) if annotated + predicted else 0.0,
    }


def run_accuracy(args: argparse.Namespace) -> dict:
    segmenter = build_segmenter(args)
    segmentation_mpp = None if args.segmentation_mpp == "plan" else args.segmentation_mpp
    results = []
    for tile in annotated_tiles():
        mpp_here = tile.mpp if segmentation_mpp == "native" else segmentation_mpp
        start = time.perf_counter()
        table, metadata = segment_whole_image(tile.image_path, tile.mpp, segmenter, mpp_here)
        elapsed = time.perf_counter() - start
        predicted = rasterise(table, tile.labels.shape)
        row = {"image": tile.name, "mpp": tile.mpp, "segmentation_mpp": metadata["segmentation_mpp"], "seconds": elapsed}
        row.update(score(tile.labels, predicted))
        row["threshold_od"] = metadata["segmentation"].get("threshold_od")
        results.append(row)
        log.info("%s: F1 %.3f, AJI %.3f (%.1f s)", tile.name, row["f1"], row["aji"], elapsed)

    tp = sum(r["tp"] for r in results)
    annotated = sum(r["annotated"] for r in results)
    predicted = sum(r["predicted"] for r in results)
    overall = {
        "image": "overall",
        "annotated": annotated,
        "predicted": predicted,
        "tp": tp,
        **{key: sum(r[key] for r in results) for key in ERROR_CLASSES},
        **rates(tp, annotated, predicted),
        "dice": float(np.mean([r["dice"] for r in results])),
        "aji": float(np.mean([r["aji"] for r in results])),
        "aji_pooled": sum(r["aji_intersection"] for r in results) / sum(r["aji_union"] for r in results),
        "dice_pooled": 2 * sum(r["dice_overlap"] for r in results) / sum(r["dice_total"] for r in results),
    }
    return {"backend": segmenter.describe(), "segmentation_mpp": args.segmentation_mpp, "images": results, "overall": overall}


def accuracy_markdown(report: dict) -> str:
    lines = [
        "| image | µm/px (segmented at) | threshold (H OD) | annotated | predicted | precision | recall | F1 | Dice | AJI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["images"]:
        lines.append(
            f"| {r['image']} | {r['mpp']:.4f} ({r['segmentation_mpp']:.3f}) | {_format_threshold(r['threshold_od'])} | "
            f"{r['annotated']} | {r['predicted']} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['dice']:.3f} | {r['aji']:.3f} |"
        )
    o = report["overall"]
    lines.append(
        f"| **overall** | | | {o['annotated']} | {o['predicted']} | {o['precision']:.3f} | {o['recall']:.3f} | "
        f"**{o['f1']:.3f}** | {o['dice']:.3f} | **{o['aji']:.3f}** (pooled {o['aji_pooled']:.3f}) |"
    )
    return "\n".join(lines)


ERROR_CLASSES = ("missed", "merged", "outline", "fp_background", "fp_other")


def errors_markdown(report: dict) -> str:
    lines = [
        "| image | unmatched annotated: missed | merged | outline | unmatched predicted: on background | other |",
        "|---|---|---|---|---|---|",
    ]
    for r in [*report["images"], report["overall"]]:
        name = "**overall**" if r["image"] == "overall" else r["image"]
        lines.append(f"| {name} | " + " | ".join(str(r[key]) for key in ERROR_CLASSES) + " |")
    return "\n".join(lines)


def _format_threshold(value) -> str:
    return "" if value is None else f"{value:.3f}"


def match_fraction(table_a, table_b) -> tuple[float, int]:
    """Return the share of nuclei of ``table_a`` with an IoU >= 0.5 partner in ``table_b``, and the match count."""
    import shapely

    a = table_a.geometry.to_numpy()
    b = table_b.geometry.to_numpy()
    if len(a) == 0:
        return 1.0, 0
    left, right = table_b.sindex.query(a, predicate="intersects")
    intersection = shapely.area(shapely.intersection(a[left], b[right]))
    union = shapely.area(a[left]) + shapely.area(b[right]) - intersection
    iou = intersection / np.maximum(union, 1e-12)
    matched = np.unique(left[iou >= MATCH_IOU])
    return len(matched) / len(a), len(matched)


def internal_duplicates(table) -> int:
    """Return the number of nucleus pairs of one table overlapping with IoU >= 0.5 (should be 0)."""
    import shapely

    geometries = table.geometry.to_numpy()
    left, right = table.sindex.query(geometries, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    intersection = shapely.area(shapely.intersection(geometries[left], geometries[right]))
    union = shapely.area(geometries[left]) + shapely.area(geometries[right]) - intersection
    return int((intersection / np.maximum(union, 1e-12) >= MATCH_IOU).sum())


def run_seam_check(args: argparse.Namespace) -> dict:
    slide_path = DATA / "wsi" / "CMU-1-Small-Region.svs"
    if not slide_path.exists():
        sys.exit(f"{slide_path} not found; set SHEST_TEST_DATA to the data folder.")
    tables = {}
    for tile_size_um in args.seam_tile_sizes:
        segmenter = build_segmenter(args)
        with open_slide(slide_path) as slide:
            plan = make_tile_plan(
                np.ones((1, 1), dtype=bool), float(max(slide.dimensions)), slide.dimensions, slide.mpp,
                slide_path.stem, target_mpp=0.5, tile_size_um=tile_size_um, overlap_um=32.0,
            )
            start = time.perf_counter()
            result = segment_slide(slide, plan, segmenter, "seam")
            log.info("%g µm tiles: %d tiles, %d nuclei, %.1f s", tile_size_um, len(plan), len(result.table),
                     time.perf_counter() - start)
        tables[tile_size_um] = (len(plan), result.table)
    (size_a, (tiles_a, table_a)), (size_b, (tiles_b, table_b)) = list(tables.items())[:2]
    share_ab, _ = match_fraction(table_a, table_b)
    share_ba, _ = match_fraction(table_b, table_a)
    return {
        "slide": slide_path.name,
        "runs": [
            {"tile_size_um": size_a, "tiles": tiles_a, "nuclei": len(table_a), "matched": share_ab,
             "duplicates": internal_duplicates(table_a)},
            {"tile_size_um": size_b, "tiles": tiles_b, "nuclei": len(table_b), "matched": share_ba,
             "duplicates": internal_duplicates(table_b)},
        ],
    }


def seam_markdown(report: dict) -> str:
    lines = [
        "| tile size (µm) | tiles | nuclei | matched in the other run (IoU >= 0.5) | pairs with IoU >= 0.5 inside the run |",
        "|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        lines.append(
            f"| {run['tile_size_um']:g} | {run['tiles']} | {run['nuclei']} | {100 * run['matched']:.2f} % | {run['duplicates']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("watershed", "cellpose"), default="watershed")
    parser.add_argument(
        "--segmentation-mpp", default="plan",
        help="'plan' (0.5 µm/px, the default tile plan resolution), 'native' (each image's own), or a number",
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a watershed parameter")
    parser.add_argument("--cellpose-model", default="cpsam")
    parser.add_argument("--diameter-um", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seam-check", action="store_true", help="run the seam check instead of the accuracy benchmark")
    parser.add_argument("--seam-tile-sizes", type=float, nargs=2, default=(256.0, 400.0), metavar="UM")
    parser.add_argument("--json", type=Path, default=None, help="also write the full results as JSON")
    args = parser.parse_args()
    if args.segmentation_mpp not in ("plan", "native"):
        args.segmentation_mpp = float(args.segmentation_mpp)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("shest").setLevel(logging.WARNING)

    if args.seam_check:
        report = run_seam_check(args)
        print(seam_markdown(report))
    else:
        report = run_accuracy(args)
        backend = report["backend"]
        print(f"Backend: {backend['backend']}, parameters {json.dumps(backend.get('parameters'), sort_keys=True)}\n")
        print(accuracy_markdown(report))
        print()
        print(errors_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
