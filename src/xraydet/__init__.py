"""xraydet: X-ray baggage threat detection, from data checks to a served, gated, registered model."""

import os

# Nothing reaches the network at run time: Ultralytics must not try to fetch fonts, weights or updates.
os.environ.setdefault("YOLO_OFFLINE", "true")

from xraydet.structures import Detections

__version__ = "0.1.0"
__all__ = ["Detections", "__version__"]
