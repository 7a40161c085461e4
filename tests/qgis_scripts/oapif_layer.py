"""Run by the system python (PyQGIS): load an OGC API Features layer as an analyst does, the
token as the password of a Basic authentication config, and print what QGIS sees as JSON.

usage: python3 oapif_layer.py URL COLLECTION TOKEN AUTH_DIR
"""

import json
import os
import sys

url, collection, token, auth_dir = sys.argv[1:5]
os.environ["QGIS_AUTH_DB_DIR_PATH"] = auth_dir

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsDataSourceUri, QgsVectorLayer  # noqa: E402

app = QgsApplication([], False)
app.initQgis()
auth = QgsApplication.authManager()
auth.setMasterPassword("geo-hires-test", True)
config = QgsAuthMethodConfig("Basic")
config.setName("geo_hires")
config.setConfig("username", "analyst")
config.setConfig("password", token)
assert auth.storeAuthenticationConfig(config)[0]
uri = QgsDataSourceUri()
uri.setParam("url", url)
uri.setParam("typename", collection)
uri.setAuthConfigId(config.id())
layer = QgsVectorLayer(uri.uri(False), "detections", "OAPIF")
out = {"valid": layer.isValid()}
if layer.isValid():
    features = list(layer.getFeatures())
    out |= {
        "count": layer.featureCount(),
        "fetched": len(features),
        "fields": [f.name() for f in layer.fields()],
        "classes": [f["class"] for f in features],
        "scores": [f["score"] for f in features],
        "crs": layer.crs().authid(),
    }
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS 3.22 may crash tearing down its network threads
