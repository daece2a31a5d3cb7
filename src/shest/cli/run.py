"""``shest run``: QC, tissue, segmentation, inference (and niches) for one slide."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shest.cli.common import (
    HOPTIMUS0_ID,
    add_mpp_argument,
    add_parser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    sample_name,
)
from shest.device import DEVICE_CHOICES
from shest.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "run",
        "run every stage for one slide: QC and tissue, segmentation, inference (and niches)",
        description=(
            "Run QC and tissue detection, nuclear segmentation, SHEST inference and, with --niche, "
            "spatial niche analysis for one slide. Each stage writes into its own folder under "
            "--outdir; a rerun skips stages whose outputs are complete and whose inputs and options "
            "are unchanged."
        ),
    )
    parser.add_argument("--wsi", type=Path, required=True, help="slide file")
    parser.add_argument("--outdir", type=Path, required=True, help="output folder (qc/, segmentation/, inference/, niche/)")
    parser.add_argument("--sample", default=None, help="sample name (default: slide file name without suffix)")
    add_mpp_argument(parser)
    parser.add_argument("--roi", type=Path, default=None, help="GeoJSON of regions to restrict the analysis to")

    seg = parser.add_argument_group("segmentation")
    seg.add_argument("--segmenter", choices=("watershed", "cellpose"), default="cellpose",
                     help="nuclear segmentation backend (watershed needs no weights and runs well on CPU)")
    seg.add_argument("--target-mpp", type=positive_float, default=0.5, help="resolution of segmentation tiles, µm/px")
    seg.add_argument("--tile-size-um", type=positive_float, default=512.0, help="segmentation tile side, µm")
    seg.add_argument("--overlap-um", type=non_negative_float, default=32.0, help="overlap between tiles, µm")
    seg.add_argument("--geojson-gzip", action="store_true", help="write the nucleus GeoJSON gzipped")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("shest", "demo"), default="shest",
                       help="'shest' runs the real checkpoint; 'demo' a small seeded stand-in network (results are not biological)")
    model.add_argument("--checkpoint", type=Path, default=None, help="SHEST checkpoint (.pth or .safetensors)")
    model.add_argument(
        "--backbone",
        default=None,
        help=f"backbone: hf-hub:ORG/NAME, a folder with config.json and weights, or a weights file "
        f"(default: the one the checkpoint records, else {HOPTIMUS0_ID})",
    )
    model.add_argument("--panel", type=Path, default=None, help="gene panel CSV (needed for the authors' released .pth)")
    model.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="cells (one 224 x 224 px tile each) per model batch of `shest infer`; segmentation keeps its own "
        "batch size, set with --segment-args=--batch-size=N",
    )
    model.add_argument("--probability-cutoff", type=probability, default=0.7, help="cells below this class probability are unassigned")
    model.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    model.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="processes that build tiles for `shest infer` (default on a GPU: one per CPU, at most 4; on the "
        "CPU: 0, none); "
        "changing it does not make a completed inference stage run again",
    )

    parser.add_argument("--niche", action="store_true", help="also run spatial niche analysis")
    parser.add_argument("--force", action="store_true", help="redo every stage even when its outputs are complete")
    for stage in ("qc", "segment", "infer", "niche"):
        parser.add_argument(
            f"--{stage}-args",
            default="",
            metavar="ARGS",
            help=f"extra options passed to `shest {stage}`, quoted as one string; "
            f"write a single flag with = (--{stage}-args=--flag)",
        )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shest.cli.main import build_parser
    from shest.pipeline.run import run_pipeline

    if not args.wsi.exists():
        raise InputError(f"Slide file not found: {args.wsi}. Check the --wsi path.")
    if args.model == "demo" and (args.checkpoint is not None or args.backbone is not None or args.panel is not None):
        raise InputError(
            "--model demo runs a seeded stand-in network and uses no weights, so --checkpoint, --backbone and "
            "--panel cannot be given with it: drop them for a trial run, or drop --model demo to use the weights."
        )
    if args.model == "shest" and args.checkpoint is None:
        raise InputError(
            "No SHEST checkpoint given: pass --checkpoint PATH (with --backbone and, for the authors' "
            "released .pth, --panel), or --model demo for a trial run with a stand-in network."
        )
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise InputError(f"Checkpoint not found: {args.checkpoint} is not a file. Check the --checkpoint path.")
    if args.checkpoint is not None and args.panel is None:
        from shest.model.checkpoint import check_checkpoint_format

        # Checked here so a missing panel fails before QC and segmentation, not after them.
        if check_checkpoint_format(args.checkpoint) == "released":
            raise InputError(
                f"{args.checkpoint} is in the authors' released layout, which names no genes: give the gene panel "
                "CSV with --panel (10x Xenium Prime 5K or multi-tissue v1, as the model was trained), or convert "
                "the checkpoint once with 'shest convert-checkpoint'."
            )
    args.sample = sample_name(args.sample, args.wsi)
    if args.model == "demo":
        log.warning("Demo run: a small seeded stand-in network replaces H-optimus-0 and the SHEST heads; "
                    "cell types and expression are not biological.")

    summary = run_pipeline(args, build_parser())
    width = max(len(name) for name, _, _ in summary)
    for name, status, seconds in summary:
        sys.stderr.write(f"{name:<{width}}  {status:<7}  {seconds:8.1f} s\n")
    return 0
