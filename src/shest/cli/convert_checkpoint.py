"""``shest convert-checkpoint``: released SHEST weights plus a gene panel to a self-describing file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from shest.cli.common import HOPTIMUS0_ID, add_parser
from shest.model.constants import LUNG_CLASSES

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "convert-checkpoint",
        "turn the authors' released .pth and its gene panel into a self-describing checkpoint",
        description=(
            "Read the released {'classifier', 'reconstructor'} .pth with torch.load(weights_only=True), label its "
            "outputs with the class list and the gene panel, check the shapes, and write a safetensors file that "
            "stores class names and colours, gene names, backbone id, normalisation, tile geometry and provenance."
        ),
    )
    parser.add_argument("released", type=Path, help="released SHEST checkpoint (.pth)")
    parser.add_argument(
        "--panel", type=Path, required=True, help="10x Xenium gene panel CSV the model was trained with"
    )
    parser.add_argument("--output", type=Path, required=True, help="output file (.safetensors is conventional)")
    parser.add_argument(
        "--panel-column", default=None, help="gene column of the panel CSV (default: gene_name, else Gene)"
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"class names in output order (default: {' '.join(LUNG_CLASSES)})",
    )
    parser.add_argument(
        "--colors",
        nargs="+",
        default=None,
        metavar="HEX",
        help="one #rrggbb colour per class (default: the lung palette)",
    )
    parser.add_argument(
        "--backbone",
        default=HOPTIMUS0_ID,
        help="backbone the heads were trained on, recorded in the file",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from shest.errors import InputError
    from shest.model.checkpoint import load_released_checkpoint, read_panel, save_shest_checkpoint

    if args.output.exists() and not args.force:
        raise InputError(f"{args.output} exists; pass --force to replace it.")
    if args.output.resolve() == args.released.resolve():
        raise InputError("--output must differ from the released checkpoint.")
    genes = read_panel(args.panel, args.panel_column)
    checkpoint = load_released_checkpoint(args.released, genes, args.classes, args.colors, backbone=args.backbone)
    checkpoint.provenance["panel_file"] = args.panel.name
    save_shest_checkpoint(checkpoint, args.output)
    log.info(
        "Wrote %s: %d classes, %d genes, %d-d embedding, backbone %s (from %s, sha256 %s)",
        args.output,
        len(checkpoint.classes),
        len(checkpoint.genes),
        checkpoint.embedding_dim,
        checkpoint.backbone,
        args.released.name,
        checkpoint.sha256,
    )
    sys.stdout.write(f"{args.output}\n")
    return 0
