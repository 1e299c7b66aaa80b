"""Makes the bpy-free ``core`` package importable as a top-level package under plain python3
(``depthcast/__init__.py`` needs bpy, so tests import ``core`` directly)."""
import os
import sys

ADDON_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PACKAGE_DIR = os.path.join(ADDON_DIR, "depthcast")
if PACKAGE_DIR not in sys.path:
    sys.path.insert(0, PACKAGE_DIR)
