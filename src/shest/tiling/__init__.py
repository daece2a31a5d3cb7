"""Tile plans: which level-0 boxes of a slide to process, and which part each tile owns."""

from shest.tiling.plan import Tile, TilePlan, make_tile_plan

__all__ = ["Tile", "TilePlan", "make_tile_plan"]
