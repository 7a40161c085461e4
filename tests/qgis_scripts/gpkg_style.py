"""Run by the system python (PyQGIS): open each GeoPackage layer as QGIS does (which applies
the layer's default style from ``layer_styles``) and print its renderer and labels as JSON;
also read the stored SLD into a fresh layer.

usage: python3 gpkg_style.py GPKG LAYER [LAYER ...]
"""

import json
import os
import sqlite3
import sys

from qgis.core import QgsApplication, QgsVectorLayer
from qgis.PyQt.QtXml import QDomDocument

path, layers = sys.argv[1], sys.argv[2:]
app = QgsApplication([], False)
app.initQgis()
out = {}
for name in layers:
    layer = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
    renderer = layer.renderer()
    info = {"valid": layer.isValid(), "renderer": renderer.type()}
    if renderer.type() == "categorizedSymbol":
        info["attr"] = renderer.classAttribute()
        info["categories"] = [[c.value(), c.symbol().color().name()] for c in renderer.categories()]
    else:
        sym = renderer.symbol().symbolLayer(0)
        info["fill_style"] = sym.properties().get("style")
        info["outline_style"] = sym.properties().get("outline_style")
    info["labels"] = layer.labelsEnabled()
    if layer.labelsEnabled():
        info["label_expression"] = layer.labeling().settings().fieldName
    with sqlite3.connect(path) as db:
        sld = db.execute(
            "SELECT styleSLD FROM layer_styles WHERE f_table_name = ?", (name,)
        ).fetchone()[0]
    fresh = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
    doc = QDomDocument()
    doc.setContent(sld, True)
    ok = fresh.readSld(doc.documentElement().firstChildElement("NamedLayer"), "")
    info["sld_renderer"] = fresh.renderer().type() if ok else None
    info["sld_rules"] = (
        [r.label() for r in fresh.renderer().rootRule().children()]
        if ok and fresh.renderer().type() == "RuleRenderer"
        else []
    )
    out[name] = info
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS 3.22 may crash tearing down its network threads
