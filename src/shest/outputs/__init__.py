"""Per-slide outputs of inference: AnnData, cell GeoJSON, overlay image and cell-type summary."""

from shest.outputs.inference import InferenceResult, infer_slide, output_paths, read_cells_table

__all__ = ["InferenceResult", "infer_slide", "output_paths", "read_cells_table"]
