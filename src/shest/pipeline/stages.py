"""The stages that ``shest run`` chains, each defined by its subcommand line and outputs.

``shest run`` calls the same subcommands that the Nextflow processes call, in the same
process, so a slide run either way gives the same files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One pipeline stage: its subcommand line, the files it reads and the files it writes."""

    name: str
    argv: list[str]
    inputs: list[Path]
    outputs: list[Path]
    extra_args: list[str] = field(default_factory=list)

    @property
    def command_line(self) -> list[str]:
        return [*self.argv, *self.extra_args]

    def describe(self) -> str:
        return "shest " + shlex.join(self.command_line)


def plan_stages(options) -> list[Stage]:
    """Build the ordered stage list for one slide from the ``shest run`` options."""
    sample = options.sample
    slide = Path(options.wsi)
    outdir = Path(options.outdir)
    qc_dir, seg_dir, infer_dir, niche_dir = (outdir / name for name in ("qc", "segmentation", "inference", "niche"))
    mpp_args = ["--mpp", repr(options.mpp)] if options.mpp is not None else []
    common = ["--sample", sample]

    plan = qc_dir / f"{sample}.tiles.json"
    qc_argv = ["qc", str(slide), "--outdir", str(qc_dir), *common, *mpp_args,
               "--target-mpp", repr(options.target_mpp),
               "--tile-size-um", repr(options.tile_size_um),
               "--overlap-um", repr(options.overlap_um)]
    if options.roi is not None:
        qc_argv += ["--roi", str(options.roi)]
    qc_inputs = [slide] + ([Path(options.roi)] if options.roi is not None else [])
    stages = [
        Stage(
            "qc",
            qc_argv,
            inputs=qc_inputs,
            outputs=[qc_dir / f"{sample}{suffix}" for suffix in (
                ".qc.json", "_qc_mqc.tsv", ".thumbnail.png", ".tissue_mask.png", ".tissue.geojson", ".tiles.json")],
            extra_args=shlex.split(options.qc_args or ""),
        )
    ]

    cells = seg_dir / f"{sample}.cells.parquet"
    geojson_suffix = ".nuclei.geojson.gz" if options.geojson_gzip else ".nuclei.geojson"
    seg_argv = ["segment", str(slide), "--plan", str(plan), "--outdir", str(seg_dir), *common, *mpp_args,
                "--backend", options.segmenter, "--device", options.device]
    if options.geojson_gzip:
        seg_argv.append("--geojson-gzip")
    stages.append(
        Stage(
            "segmentation",
            seg_argv,
            inputs=[slide, plan],
            outputs=[cells, seg_dir / f"{sample}{geojson_suffix}", seg_dir / f"{sample}_segmentation_mqc.tsv"],
            extra_args=shlex.split(options.segment_args or ""),
        )
    )

    h5ad = infer_dir / f"{sample}.h5ad"
    infer_argv = ["infer", str(slide), "--cells", str(cells), "--outdir", str(infer_dir), *common, *mpp_args,
                  "--device", options.device, "--batch-size", str(options.batch_size),
                  "--probability-cutoff", repr(options.probability_cutoff)]
    infer_inputs = [slide, cells]
    if options.model == "demo":
        infer_argv += ["--model", "demo"]
    else:
        infer_argv += ["--checkpoint", str(options.checkpoint)]
        infer_inputs.append(Path(options.checkpoint))
        if options.backbone is not None:
            infer_argv += ["--backbone", str(options.backbone)]
        if options.panel is not None:
            infer_argv += ["--panel", str(options.panel)]
            infer_inputs.append(Path(options.panel))
    stages.append(
        Stage(
            "inference",
            infer_argv,
            inputs=infer_inputs,
            outputs=[h5ad, infer_dir / f"{sample}.cells.geojson", infer_dir / f"{sample}.overlay.png",
                     infer_dir / f"{sample}_celltypes_mqc.tsv"],
            extra_args=shlex.split(options.infer_args or ""),
        )
    )

    if options.niche:
        stages.append(
            Stage(
                "niche",
                ["niche", str(h5ad), "--outdir", str(niche_dir), *common, "--slide", str(slide)],
                inputs=[h5ad, slide],
                outputs=[niche_dir / f"{sample}.niche.h5ad", niche_dir / f"{sample}_niche_mqc.tsv",
                         niche_dir / f"{sample}_infiltration_mqc.tsv"],
                extra_args=shlex.split(options.niche_args or ""),
            )
        )
    return stages
