"""``shest infer``: cell types and expression for every nucleus of a slide."""

from __future__ import annotations

import logging
from pathlib import Path

from shest.cli.common import (
    HOPTIMUS0_ID,
    add_mpp_argument,
    add_output_arguments,
    add_parser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    sample_name,
)
from shest.device import DEVICE_CHOICES

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "infer",
        "predict cell types and expression per nucleus (H-optimus-0 + SHEST heads, or the demo model)",
        description=(
            "Build the SHEST quadruple tile of every nucleus in the cell table, run the frozen backbone and the "
            "SHEST heads, and write S.h5ad, S.cells.geojson, S.overlay.png and S_celltypes_mqc.tsv."
        ),
    )
    parser.add_argument("slide", type=Path, help="slide file the cell table was segmented from")
    parser.add_argument("--cells", type=Path, required=True, help="cell table S.cells.parquet from 'shest segment'")
    add_mpp_argument(parser)
    add_output_arguments(parser)

    model = parser.add_argument_group("model (choose --model demo or --checkpoint)")
    source = model.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        choices=["demo"],
        help="demo: a small seeded network with random weights, for trials without the gated weights; "
        "outputs are marked demo",
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="SHEST head weights: the authors' released .pth (needs --panel) or a file from 'shest convert-checkpoint'",
    )
    model.add_argument(
        "--backbone",
        default=None,
        help=f"backbone: hf-hub:ORG/NAME, a folder with config.json and weights, or a weights file "
        f"(default: the checkpoint's, else {HOPTIMUS0_ID})",
    )
    model.add_argument(
        "--backbone-arch",
        default=None,
        help="timm architecture of a bare backbone weights file without config.json (default: H-optimus-0's "
        "vit_giant_patch14_reg4_dinov2)",
    )
    model.add_argument("--panel", type=Path, default=None, help="10x Xenium gene panel CSV for a released checkpoint")
    model.add_argument(
        "--panel-column", default=None, help="gene column of the panel CSV (default: gene_name, else Gene)"
    )
    model.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="NAME",
        help="class names in output order for a released checkpoint (default: the six lung classes)",
    )

    options = parser.add_argument_group("inference")
    options.add_argument("--batch-size", type=positive_int, default=64, help="cells per model batch")
    options.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available")
    options.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="processes that read windows and build tiles, in parallel with the model (default on a GPU: one "
        "per CPU, at most 4; on the CPU: 0, which builds them in a thread of the main process). With workers "
        "on the CPU device the model keeps the other CPUs.",
    )
    options.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto: bfloat16 autocast on CUDA, float32 on the CPU",
    )
    options.add_argument(
        "--probability-cutoff",
        type=probability,
        default=0.7,
        help="cells whose top class probability is lower are flagged unassigned (predictions are kept)",
    )
    options.add_argument(
        "--min-nucleus-um",
        type=non_negative_float,
        default=None,
        help="smallest larger bounding-box side of a nucleus, µm (default: the checkpoint's, else 2)",
    )
    options.add_argument(
        "--max-nucleus-um",
        type=positive_float,
        default=None,
        help="largest larger bounding-box side of a nucleus, µm (default: the checkpoint's, else 16)",
    )
    options.add_argument(
        "--object-type",
        choices=["cell", "detection"],
        default="cell",
        help="QuPath object type of the GeoJSON features",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from shest.errors import InputError
    from shest.outputs import infer_slide

    sample = sample_name(args.sample, args.slide)
    if args.model == "demo" and (args.backbone or args.panel or args.classes):
        raise InputError("--model demo takes no --backbone, --panel or --classes; drop them or use --checkpoint.")
    infer_slide(
        args.slide,
        args.cells,
        args.outdir,
        sample,
        demo=args.model == "demo",
        checkpoint=args.checkpoint,
        backbone=args.backbone,
        panel=args.panel,
        panel_column=args.panel_column,
        classes=args.classes,
        backbone_architecture=args.backbone_arch,
        mpp=args.mpp,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        probability_cutoff=args.probability_cutoff,
        min_nucleus_um=args.min_nucleus_um,
        max_nucleus_um=args.max_nucleus_um,
        object_type=args.object_type,
        workers=args.workers,
    )
    return 0
