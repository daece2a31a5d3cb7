"""Spatial niche analysis of predicted cells: graphs, enrichment, neighbourhoods, Moran's I, infiltration."""
