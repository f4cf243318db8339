"""Generated model assets: the ArUco marker texture on the quadruped's back.

The PNG is generated with OpenCV's own `cv2.aruco.generateImageMarker`, so the marker the twin
renders is exactly what `cv2.aruco` detects. It is written next to the MJCF (and kept in the repo);
`ensure_assets()` regenerates it if it is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MODELS_DIR", "MARKER_DICT", "MARKER_ID", "MARKER_PNG", "MARKER_CELLS", "MARKER_QUIET_CELLS", "marker_png", "ensure_assets"]

MODELS_DIR = Path(__file__).resolve().parent / "models"
MARKER_DICT = "DICT_4X4_50"
MARKER_ID = 0
MARKER_PNG = MODELS_DIR / "aruco_4x4_50_id0.png"
MARKER_CELLS = 6  # 4x4 data bits + a one-cell black border on each side
MARKER_QUIET_CELLS = 1  # white margin (cells) on each side so the marker stands out on the dark torso
PX_PER_CELL = 32


def marker_png(path: Path = MARKER_PNG, dictionary: str = MARKER_DICT, marker_id: int = MARKER_ID) -> Path:
    """Write the marker image (white quiet zone included) as a PNG and return its path.

    The texture spans (MARKER_CELLS + 2·MARKER_QUIET_CELLS) cells; the black marker square is the
    middle MARKER_CELLS of them, so on a geom of side s the marker's side is s·6/8.
    """
    import cv2

    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    inner = cv2.aruco.generateImageMarker(d, marker_id, MARKER_CELLS * PX_PER_CELL)
    q = MARKER_QUIET_CELLS * PX_PER_CELL
    img = np.pad(inner, q, constant_values=255)
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), rgb):
        raise OSError(f"could not write {path}")
    return path


def ensure_assets() -> None:
    """Create any generated asset that is missing (called before a model is loaded)."""
    if not MARKER_PNG.exists():
        marker_png()
