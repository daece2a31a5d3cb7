"""``shest inspect``: print what a slide contains and its resolved pixel size."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from shest.cli.common import add_mpp_argument, add_parser

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "inspect",
        "describe a slide: size, levels, µm/px and its source, vendor, associated images",
    )
    parser.add_argument("slide", type=Path, help="slide file (SVS, NDPI, MRXS, SCN, BIF, TIFF, OME-TIFF, PNG, JPEG)")
    add_mpp_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a readable summary")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from shest.slide import open_slide

    # A slide without µm/px is still described; the missing value is reported, not fatal.
    # An invalid --mpp given by the user is still an error.
    with open_slide(args.slide, mpp=args.mpp, require_mpp=args.mpp is not None) as slide:
        info = slide.info()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if info["mpp_x"] is not None:
        size = (f"{info['width']} x {info['height']} px, "
                f"{info['width'] * info['mpp_x'] / 1000:.2f} x {info['height'] * info['mpp_y'] / 1000:.2f} mm")
        pixel = f"{info['mpp_x']:.5f} x {info['mpp_y']:.5f} µm/px (from {info['mpp_source']})"
    else:
        size = f"{info['width']} x {info['height']} px"
        pixel = "not found in the metadata; every other command needs --mpp for this slide"
    lines = [
        f"path:              {info['path']}",
        f"backend:           {info['backend']} (vendor: {info['vendor'] or 'unknown'})",
        f"size (level 0):    {size}",
        f"pixel size:        {pixel}",
        f"objective power:   {info['objective_power'] if info['objective_power'] else 'not recorded'}",
        f"levels:            {info['level_count']}",
    ]
    for level in info["levels"]:
        lines.append(f"  level {level['level']}: {level['width']} x {level['height']} px, downsample {level['downsample']}")
    if info["bounds"]:
        b = info["bounds"]
        lines.append(f"bounds:            x={b['x']} y={b['y']} {b['width']} x {b['height']} px")
    lines.append(f"associated images: {', '.join(info['associated_images']) or 'none'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
