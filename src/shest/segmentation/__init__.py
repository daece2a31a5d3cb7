"""Nuclear segmentation: backends, whole-slide tiling, cell tables and merging.

Backends: :class:`~shest.segmentation.watershed.WatershedSegmenter` (weight-free,
CPU) and :class:`~shest.segmentation.cellpose_backend.CellposeSegmenter`
(Cellpose 4). :mod:`shest.segmentation.wsi` runs either over a tile plan,
:mod:`shest.segmentation.table` stores the result and
:mod:`shest.segmentation.merge` combines the chunks of one slide.
"""

BACKENDS = ("watershed", "cellpose")
