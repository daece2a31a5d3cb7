"""Slide QC: tissue, focus, ink, background, stain and pixel-size checks, and the ``shest qc`` outputs."""

from shest.qc.outputs import PlanParams, QcRun, make_qc_plan, output_paths, run_slide_qc, write_qc_outputs
from shest.qc.report import QcParams, QcThresholds, SlideQc, assess_slide

__all__ = [
    "PlanParams",
    "QcParams",
    "QcRun",
    "QcThresholds",
    "SlideQc",
    "assess_slide",
    "make_qc_plan",
    "output_paths",
    "run_slide_qc",
    "write_qc_outputs",
]
