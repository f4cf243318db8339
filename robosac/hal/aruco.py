"""ArUco tracking of the quadruped's torso from a fixed overhead camera (cv2.aruco).

The marker's four corners are detected (sub-pixel), each corner's pixel ray is intersected with the
horizontal plane z = plane_z_m (the marker's known height above the floor), and from the four floor
points come the position (their mean, m, world frame) and the heading (rad, direction of the
marker's +x edge, top-left -> top-right corner, plus `heading_offset_rad`). Velocity is the
difference of successive observations over their capture timestamps.

Calibration (`ArucoCalibration`): intrinsics K (3x3, OpenCV pixel convention), optional distortion
coefficients, the camera's world position (m) and rotation camera->world in OpenCV's camera
convention (x right, y down, z forward), the plane height, marker id and dictionary. For a MuJoCo
camera (looks along -z, y up) use `ArucoCalibration.from_mujoco(...)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["ArucoCalibration", "ArucoTracker", "MarkerPose", "wrap_angle"]

# MuJoCo camera frame (x right, y up, looks along -z) -> OpenCV camera frame (x right, y down, +z).
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


def wrap_angle(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class ArucoCalibration:
    K: np.ndarray  # (3, 3) intrinsics, px
    cam_pos: np.ndarray  # (3,) camera centre in the world, m
    cam_rot: np.ndarray  # (3, 3) camera->world rotation, OpenCV camera axes (x right, y down, z forward)
    plane_z_m: float  # height of the marker plane above the world origin, m
    marker_id: int = 0
    dictionary: str = "DICT_4X4_50"
    heading_offset_rad: float = 0.0  # added to the marker +x direction to give the robot's heading
    dist: np.ndarray | None = None  # OpenCV distortion coefficients (None = none)

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=float)
        pos = np.asarray(self.cam_pos, dtype=float).reshape(-1)
        rot = np.asarray(self.cam_rot, dtype=float)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got {K.shape}")
        if pos.shape != (3,):
            raise ValueError(f"cam_pos must have 3 elements, got {pos.shape}")
        if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6):
            raise ValueError("cam_rot must be a 3x3 rotation matrix")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "cam_pos", pos)
        object.__setattr__(self, "cam_rot", rot)
        if self.dist is not None:
            object.__setattr__(self, "dist", np.asarray(self.dist, dtype=float).reshape(-1))

    @classmethod
    def from_mujoco(cls, K: np.ndarray, cam_pos: np.ndarray, cam_rot_mj: np.ndarray, plane_z_m: float, **kw: Any) -> "ArucoCalibration":
        """From `MujocoSim.camera_matrix` / `camera_pose` (rotation in MuJoCo's camera convention)."""
        return cls(K=K, cam_pos=cam_pos, cam_rot=np.asarray(cam_rot_mj, dtype=float) @ _MJ_TO_CV, plane_z_m=plane_z_m, **kw)

    @classmethod
    def from_sim(cls, sim: Any, camera: str, width: int, height: int, plane_z_m: float | None = None, **kw: Any) -> "ArucoCalibration":
        """From a `sim.mujoco_sim.MujocoSim` (the twin's model): intrinsics and pose of a fixed MJCF
        camera at width x height; plane_z_m defaults to the marker's current height."""
        K = sim.camera_matrix(camera, width, height)
        pos, rot = sim.camera_pose(camera)
        z = float(sim.marker_position()[2]) if plane_z_m is None else float(plane_z_m)
        return cls.from_mujoco(K, pos, rot, z, **kw)



@dataclass(frozen=True)
class MarkerPose:
    x: float  # m, world, on the plane
    y: float  # m
    heading: float  # rad, [-pi, pi), about world +z, 0 = world +x
    stamp: float  # s, the frame's capture time
    vx: float | None = None  # m/s, by differencing with the previous observation (None for the first)
    vy: float | None = None
    yaw_rate: float | None = None  # rad/s
    corners_px: np.ndarray = field(default=None, repr=False)  # (4, 2) detected corners

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y])


class ArucoTracker:
    """Marker pose on the floor plane from frames of a calibrated fixed camera.

    max_gap_s: observations further apart than this are not differenced (velocity None again).
    """

    def __init__(self, calibration: ArucoCalibration, max_gap_s: float = 0.5) -> None:
        self.cal = calibration
        self.max_gap_s = float(max_gap_s)
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, calibration.dictionary))
        self._det = cv2.aruco.ArucoDetector(d, params)
        self._last: MarkerPose | None = None
        self.seen = 0
        self.missed = 0

    def reset(self) -> None:
        """Forget the previous observation (the next one has no velocity)."""
        self._last = None

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """Corners (4, 2) px of the calibrated marker id in an RGB or gray frame, or None."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        corners, ids, _ = self._det.detectMarkers(gray)
        if ids is None:
            return None
        for c, i in zip(corners, ids.ravel()):
            if int(i) == self.cal.marker_id:
                return np.asarray(c, dtype=float).reshape(4, 2)
        return None

    def pixels_to_plane(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) -> points (N, 3) m on the plane z = plane_z_m (world frame)."""
        cal = self.cal
        uv = np.asarray(uv, dtype=float).reshape(-1, 1, 2)
        dist = cal.dist if cal.dist is not None else np.zeros(5)
        norm = cv2.undistortPoints(uv, cal.K, dist).reshape(-1, 2)  # normalised camera coords
        rays = np.column_stack([norm, np.ones(len(norm))]) @ cal.cam_rot.T  # world directions
        if np.any(np.abs(rays[:, 2]) < 1e-9):
            raise ValueError("a pixel ray is parallel to the marker plane")
        s = (cal.plane_z_m - cal.cam_pos[2]) / rays[:, 2]
        if np.any(s <= 0):
            raise ValueError("the marker plane is behind the camera")
        return cal.cam_pos + s[:, None] * rays

    def update(self, frame: np.ndarray, stamp: float) -> MarkerPose | None:
        """Track in one frame captured at `stamp` (s, monotonic). None when the marker is not seen."""
        corners = self.detect(frame)
        if corners is None:
            self.missed += 1
            return None
        p = self.pixels_to_plane(corners)[:, :2]  # TL, TR, BR, BL
        centre = p.mean(axis=0)
        xdir = (p[1] - p[0]) + (p[2] - p[3])
        heading = wrap_angle(math.atan2(xdir[1], xdir[0]) + self.cal.heading_offset_rad)
        vx = vy = yaw_rate = None
        last = self._last
        if last is not None:
            dt = stamp - last.stamp
            if 0 < dt <= self.max_gap_s:
                vx = (centre[0] - last.x) / dt
                vy = (centre[1] - last.y) / dt
                yaw_rate = wrap_angle(heading - last.heading) / dt
        pose = MarkerPose(float(centre[0]), float(centre[1]), heading, float(stamp), vx, vy, yaw_rate, corners)
        self._last = pose
        self.seen += 1
        return pose
