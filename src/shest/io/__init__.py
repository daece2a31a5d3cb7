"""File output helpers shared by all stages: atomic writes and GeoJSON."""
