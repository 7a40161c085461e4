"""Export stage: GeoJSON (WGS84); GeoPackage, GeoParquet, FlatGeobuf (scene CRS); quicklook."""

from geo_hires.export.coverage import coverage_frame, valid_area, write_coverage
from geo_hires.export.geojson import crs_label, feature_collection, write_geojson, write_text_atomic
from geo_hires.export.quicklook import write_quicklook
from geo_hires.export.vector import FORMATS, check_outputs, write_gpkg, write_output

__all__ = [
    "FORMATS",
    "check_outputs",
    "coverage_frame",
    "crs_label",
    "feature_collection",
    "valid_area",
    "write_coverage",
    "write_geojson",
    "write_gpkg",
    "write_output",
    "write_quicklook",
    "write_text_atomic",
]
