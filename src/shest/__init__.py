"""SHEST: cell types and gene expression for every nucleus of an H&E whole-slide image."""

__version__ = "0.1.0"
