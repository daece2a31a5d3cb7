"""The stages that ``shest run`` chains, each defined by its subcommand line and outputs.

``shest run`` calls the same subcommands that the Nextflow processes call, in the same
process, so a slide run either way gives the same files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from shest.errors import InputError


@dataclass
class Stage:
    """One pipeline stage: its subcommand line, the files it reads and the files it writes.

    ``runtime_args`` change how fast the stage runs but not what it writes (such as
    ``--workers``). They are passed to the subcommand but left out of
    :attr:`options_line`, which decides whether a completed stage is reused.
    """

    name: str
    argv: list[str]
    inputs: list[Path]
    outputs: list[Path]
    extra_args: list[str] = field(default_factory=list)
    runtime_args: list[str] = field(default_factory=list)
    args_option: str = ""  # the shest run option that sets extra_args, such as --qc-args

    @property
    def command_line(self) -> list[str]:
        return [*self.argv, *self.runtime_args, *self.extra_args]

    @property
    def options_line(self) -> list[str]:
        """The command line without :attr:`runtime_args`."""
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
            extra_args=split_args("--qc-args", options.qc_args),
            args_option="--qc-args",
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
            extra_args=split_args("--segment-args", options.segment_args),
            args_option="--segment-args",
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
            extra_args=split_args("--infer-args", options.infer_args),
            args_option="--infer-args",
            runtime_args=["--workers", str(options.workers)] if getattr(options, "workers", None) is not None else [],
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
                extra_args=split_args("--niche-args", options.niche_args),
                args_option="--niche-args",
            )
        )
    return stages


def split_args(option: str, text: str | None) -> list[str]:
    """Split the value of a ``--<stage>-args`` option as a shell would.

    Raises
    ------
    InputError
        The text has an unclosed quote or a trailing backslash.
    """
    try:
        return shlex.split(text or "")
    except ValueError as exc:
        raise InputError(
            f"{option} {text!r} cannot be split into options ({exc}); close every quote, for example "
            f"{option}='--flag \"a value\"'."
        ) from None
