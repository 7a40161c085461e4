"""Export stage: georeferencing, GeoJSON (WGS84), GeoPackage (scene CRS), quicklook PNG."""

from geo_hires.export.geojson import crs_label, feature_collection, write_geojson, write_text_atomic
from geo_hires.export.gpkg import write_gpkg
from geo_hires.export.quicklook import write_quicklook

__all__ = [
    "crs_label",
    "feature_collection",
    "write_geojson",
    "write_gpkg",
    "write_quicklook",
    "write_text_atomic",
]
