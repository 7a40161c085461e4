"""Default styles stored in every GeoPackage we write, so a GIS shows the layers as meant.

QGIS opens a GeoPackage layer with the style its ``layer_styles`` table marks as default for
that layer (the table QGIS itself writes with *Save style → In database*); other tools read the
SLD column of the same row. Without one, detections open as plain grey polygons and the
coverage looks just like them. So each layer gets a QML (QGIS's own format) and an SLD 1.1
(OGC Symbology Encoding) style:

- ``detections``: categorised by ``class`` (one colour per class of the model, in the card's
  order), translucent fill, and a label ``class score`` (score with two decimals);
- ``coverage``: a hatched outline, so that "scanned here" never reads as "found here";
- ``counts`` (a multi-polygon AOI): outlines labelled with the polygon's name and count.

The XML is built with :mod:`xml.etree.ElementTree` (attributes in insertion order), and the row
carries no time of writing, so equal inputs give equal bytes.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

__all__ = [
    "PALETTE",
    "LayerStyle",
    "class_colour",
    "counts_style",
    "coverage_style",
    "detections_style",
    "write_layer_styles",
]

PALETTE = (
    (228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0),
    (166, 86, 40), (247, 129, 191), (0, 170, 170), (153, 153, 0), (102, 102, 102),
)  # fmt: skip
"""Colours of the classes, in the model card's class order (ColorBrewer Set1, then more)."""
COVERAGE_RGB = (255, 140, 0)
SCORE_LABEL = '"class" || \' \' || format_number("score", 2)'
COUNT_LABEL = '"name" || \': \' || "class" || \' \' || "count"'
SLD_NS = {
    "xmlns": "http://www.opengis.net/sld",
    "xmlns:se": "http://www.opengis.net/se",
    "xmlns:ogc": "http://www.opengis.net/ogc",
    "xmlns:xlink": "http://www.w3.org/1999/xlink",
    "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xsi:schemaLocation": "http://www.opengis.net/sld "
    "http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd",
    "version": "1.1.0",
}


@dataclasses.dataclass(frozen=True)
class LayerStyle:
    """One row of ``layer_styles``: the default style of ``layer``."""

    layer: str
    qml: str
    sld: str
    description: str


def class_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _rgba(rgb: tuple[int, int, int], alpha: int = 255) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _fill_symbol(parent: ET.Element, name: str, options: dict[str, str]) -> None:
    symbol = _sub(parent, "symbol", name=name, type="fill", alpha="1", clip_to_extent="1")
    layer = _sub(symbol, "layer", **{"class": "SimpleFill", "enabled": "1", "pass": "0"})
    opts = _sub(layer, "Option", type="Map")
    for key, value in options.items():
        _sub(opts, "Option", name=key, value=value, type="QString")


def _qml_root(labels: bool) -> ET.Element:
    return ET.Element(
        "qgis",
        {"version": "3.22.0", "labelsEnabled": "1" if labels else "0",
         "styleCategories": "Symbology|Labeling"},
    )  # fmt: skip


def _qml_label(root: ET.Element, expression: str) -> None:
    settings = _sub(_sub(root, "labeling", type="simple"), "settings", calloutType="simple")
    _sub(settings, "text-style", fieldName=expression, isExpression="1", fontSize="8",
         textColor="20,20,20,255", fontFamily="Sans Serif")  # fmt: skip
    _sub(settings, "text-buffer", bufferDraw="1", bufferSize="0.7", bufferSizeUnits="MM",
         bufferColor="255,255,255,255")  # fmt: skip
    _sub(settings, "placement", placement="1", polygonPlacementFlags="2")  # over the centroid


def _qml(root: ET.Element) -> str:
    _sub(root, "layerGeometryType", "2")
    ET.indent(root, " ")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def _sld(layer: str, rules: Sequence[ET.Element]) -> str:
    root = ET.Element("StyledLayerDescriptor", SLD_NS)
    named = _sub(root, "NamedLayer")
    _sub(named, "se:Name", layer)
    user = _sub(named, "UserStyle")
    _sub(user, "se:Name", layer)
    fts = _sub(user, "se:FeatureTypeStyle")
    for rule in rules:
        fts.append(rule)
    ET.indent(root, " ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _sld_polygon(rule: ET.Element, rgb: tuple[int, int, int], *, hatched: bool) -> None:
    sym = _sub(rule, "se:PolygonSymbolizer")
    fill = _sub(sym, "se:Fill")
    if hatched:
        mark = _sub(_sub(_sub(fill, "se:GraphicFill"), "se:Graphic"), "se:Mark")
        _sub(mark, "se:WellKnownName", "slash")
        _sub(_sub(mark, "se:Stroke"), "se:SvgParameter", _hex(rgb), name="stroke")
    else:
        _sub(fill, "se:SvgParameter", _hex(rgb), name="fill")
        _sub(fill, "se:SvgParameter", "0.25", name="fill-opacity")
    stroke = _sub(sym, "se:Stroke")
    _sub(stroke, "se:SvgParameter", _hex(rgb), name="stroke")
    _sub(stroke, "se:SvgParameter", "2", name="stroke-width")
    if hatched:
        _sub(stroke, "se:SvgParameter", "4 2", name="stroke-dasharray")


def _sld_label(rule: ET.Element, properties: Sequence[str]) -> None:
    text = _sub(rule, "se:TextSymbolizer")
    label = _sub(text, "se:Label")
    for i, prop in enumerate(properties):
        if i:
            _sub(label, "ogc:Literal", " ")
        _sub(label, "ogc:PropertyName", prop)
    fill = _sub(text, "se:Fill")
    _sub(fill, "se:SvgParameter", "#141414", name="fill")


def detections_style(classes: Sequence[str], layer: str = "detections") -> LayerStyle:
    """Detections coloured by class, labelled ``class score``."""
    root = _qml_root(labels=True)
    renderer = _sub(root, "renderer-v2", type="categorizedSymbol", attr="class",
                    forceraster="0", symbollevels="0", enableorderby="0")  # fmt: skip
    categories, symbols = _sub(renderer, "categories"), _sub(renderer, "symbols")
    rules = []
    for i, name in enumerate(classes):
        rgb = class_colour(i)
        _sub(categories, "category", symbol=str(i), value=name, label=name, render="true")
        _fill_symbol(symbols, str(i), {
            "color": _rgba(rgb, 64), "outline_color": _rgba(rgb), "outline_width": "0.6",
            "outline_width_unit": "MM", "style": "solid", "outline_style": "solid",
        })  # fmt: skip
        rule = ET.Element("se:Rule")
        _sub(rule, "se:Name", name)
        is_class = _sub(_sub(rule, "ogc:Filter"), "ogc:PropertyIsEqualTo")
        _sub(is_class, "ogc:PropertyName", "class")
        _sub(is_class, "ogc:Literal", name)
        _sld_polygon(rule, rgb, hatched=False)
        _sld_label(rule, ("class", "score"))
        rules.append(rule)
    _qml_label(root, SCORE_LABEL)
    return LayerStyle(layer, _qml(root), _sld(layer, rules), "detections coloured by class")


def coverage_style(layer: str = "coverage") -> LayerStyle:
    """Where each level looked: a hatched, dashed outline (never mistaken for a detection)."""
    root = _qml_root(labels=False)
    renderer = _sub(root, "renderer-v2", type="singleSymbol", forceraster="0",
                    symbollevels="0", enableorderby="0")  # fmt: skip
    _fill_symbol(_sub(renderer, "symbols"), "0", {
        "color": _rgba(COVERAGE_RGB), "style": "b_diagonal", "outline_color": _rgba(COVERAGE_RGB),
        "outline_width": "0.5", "outline_width_unit": "MM", "outline_style": "dash",
    })  # fmt: skip
    rule = ET.Element("se:Rule")
    _sub(rule, "se:Name", "scanned")
    _sld_polygon(rule, COVERAGE_RGB, hatched=True)
    return LayerStyle(layer, _qml(root), _sld(layer, [rule]), "area scanned, hatched outline")


def counts_style(layer: str = "counts") -> LayerStyle:
    """AOI polygons as outlines labelled with their name, class and count."""
    root = _qml_root(labels=True)
    renderer = _sub(root, "renderer-v2", type="singleSymbol", forceraster="0",
                    symbollevels="0", enableorderby="0")  # fmt: skip
    rgb = (30, 30, 30)
    _fill_symbol(_sub(renderer, "symbols"), "0", {
        "color": _rgba(rgb, 0), "style": "no", "outline_color": _rgba(rgb),
        "outline_width": "0.8", "outline_width_unit": "MM", "outline_style": "solid",
    })  # fmt: skip
    _qml_label(root, COUNT_LABEL)
    rule = ET.Element("se:Rule")
    _sub(rule, "se:Name", "area of interest")
    sym = _sub(rule, "se:PolygonSymbolizer")
    stroke = _sub(sym, "se:Stroke")
    _sub(stroke, "se:SvgParameter", _hex(rgb), name="stroke")
    _sub(stroke, "se:SvgParameter", "2", name="stroke-width")
    _sld_label(rule, ("name", "class", "count"))
    return LayerStyle(layer, _qml(root), _sld(layer, [rule]), "AOI polygons with counts")


_TABLE = """CREATE TABLE IF NOT EXISTS layer_styles (
 id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, f_table_catalog TEXT(256),
 f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256),
 styleName TEXT(30), styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, description TEXT,
 owner TEXT(30), ui TEXT(30), update_time DATETIME)"""


def write_layer_styles(path: Path, styles: Sequence[LayerStyle], *, last_change: str) -> None:
    """Add ``styles`` as the default styles of their layers to the GeoPackage at ``path``.

    The table is the one QGIS writes (same columns), registered in ``gpkg_contents`` as an
    attributes table so GDAL lists it; ``last_change`` is the fixed time GDAL was given.
    """
    with sqlite3.connect(path) as db:
        db.execute(_TABLE)
        db.execute(
            "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, "
            "description, last_change, srs_id) VALUES ('layer_styles', 'attributes', "
            "'layer_styles', '', ?, 0)",
            (last_change,),
        )
        for s in styles:
            geom = db.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (s.layer,)
            ).fetchone()
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, ?)",
                (s.layer, geom[0] if geom else "", s.layer, s.qml, s.sld, s.description,
                 last_change),
            )  # fmt: skip
    db.close()
