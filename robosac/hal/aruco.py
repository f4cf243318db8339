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

6-DoF pose (set `marker_size_m`, the black square's side): `cv2.solvePnPGeneric(...,
SOLVEPNP_IPPE_SQUARE)` gives both IPPE solutions with their reprojection RMS (`solve_pnp`); the lower
one is reported as `MarkerPose.z` (m, marker centre height), `roll`, `pitch` (rad, marker frame
relative to world, R = Rz(yaw) Ry(pitch) Rx(roll): roll about the marker's +x, pitch about its +y;
marker +x = TL->TR edge, +z out of its face; on the twin that is the torso's frame) and `tilt` (rad,
>= 0, marker normal vs world +z). x, y and heading stay the plane intersection: at the standing
height it is within 4 mm vs up to 31 mm for PnP's x, y; it is off by (r/h)*dz (r: distance from the
point under the camera, h: camera height above the marker) when the marker is dz off the plane, e.g.
40 mm at r = 0.78 m, dz = -0.10 m, where PnP x, y is within 17 mm.

Measured on the twin's 640x480 overhead camera (marker 0.1125 m at 2.0 m: ~29 px; six spots
0..0.78 m off-centre, headings -2..2.5 rad; errors are |estimate - truth|, max over the spots):

    true pose                   tilt err       roll/pitch err     z err (m)
    upright, standing height    <= 3.2 deg     <= 2.8 deg         -0.049 .. -0.008
    upright, lowered 0.05 m     <= 9.6 deg     <= 9.6 deg         -0.033 .. -0.004
    upright, lowered 0.10 m     <= 16.2 deg    <= 14.9 deg        -0.035 .. -0.017
    roll or pitch +-10 deg      <= 4.9 deg     <= 22 deg (sign)   -0.059 .. -0.009
    roll or pitch +-20 deg      <= 11.4 deg    <= 19 deg (sign)   -0.063 .. +0.003
    +-30 deg (72 poses, incl.   <= 4.3 deg in 71; one wrong branch: 57.7 deg read for 30
      lowered 0.05/0.10 m)      (pitch off 87 deg); z -0.097 .. -0.009
    +-40 deg                    <= 2.0 deg     <= 2.0 deg         -0.087 .. -0.008 (1/24: no pose)

Reliable: the tilt magnitude near and above the 30 deg limit in most poses (median error 0.4 deg
over 60 poses of 30-40 deg; 97 % within 5 deg); z to about -3 +- 3 cm (biased low: the detected
square is ~0.3 px smaller than rendered), enough to see a dropped torso, not centimetre height.
Not reliable: small tilts (< ~15 deg read anywhere from 0 to 16 deg: foreshortening of a 29 px
square is sub-pixel), and the tilt *direction*: IPPE's two solutions mirror the normal about the
line of sight and their reprojection errors are close for a small marker, so sometimes the wrong
one wins (roll/pitch sign flips; world tilt then off by up to ~2x the view angle, 27.7 deg here).
IPPE can also return no finite solution (then z/roll/pitch/tilt are None). So at 640x480 the tilt
error exceeds 5 deg in a few poses: do not rely on the camera alone for the 30 deg stop. Fixes: the
torso's IMU (best), or 1280x960 (same grid: tilt within 1.7 deg bar one wrong branch, z -14..-3 mm
when lowered 0.10 m), or a bigger marker (error scales with its size in pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from robosac.hal.units import wrap_angle

__all__ = ["ArucoCalibration", "ArucoTracker", "MarkerPose", "roll_pitch_tilt", "wrap_angle"]

# MuJoCo camera frame (x right, y up, looks along -z) -> OpenCV camera frame (x right, y down, +z).
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


def roll_pitch_tilt(R: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, tilt) rad of a body->world rotation R (3, 3): R = Rz(yaw) Ry(pitch) Rx(roll)
    (ZYX Euler, roll about the body's +x, pitch about +y); tilt = angle of the body +z to world +z."""
    roll = math.atan2(R[2, 1], R[2, 2])
    pitch = math.asin(float(np.clip(-R[2, 0], -1.0, 1.0)))
    tilt = math.acos(float(np.clip(R[2, 2], -1.0, 1.0)))
    return roll, pitch, tilt


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
    marker_size_m: float | None = None  # side of the black square, m; set -> 6-DoF pose (z, roll, pitch, tilt)

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
        if self.marker_size_m is not None:
            if not self.marker_size_m > 0:
                raise ValueError(f"marker_size_m must be > 0, got {self.marker_size_m}")
            object.__setattr__(self, "marker_size_m", float(self.marker_size_m))

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
    # Only with `ArucoCalibration.marker_size_m` (else None); see the module docstring for accuracy.
    z: float | None = None  # m, world height of the marker centre (PnP)
    roll: float | None = None  # rad, marker frame vs world, R = Rz(yaw) Ry(pitch) Rx(roll)
    pitch: float | None = None  # rad, in [-pi/2, pi/2]
    tilt: float | None = None  # rad, >= 0, angle between the marker normal and world +z

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

    def solve_pnp(self, corners: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Both IPPE_SQUARE solutions for the corners (4, 2) px (TL, TR, BR, BL), best first:
        [(centre (3,) m world, rotation marker->world (3, 3), reprojection RMS px), ...].
        Marker frame: +x = TL->TR, +y = BL->TL, +z = out of the marker's face (towards the camera)."""
        cal = self.cal
        if cal.marker_size_m is None:
            raise ValueError("solve_pnp needs ArucoCalibration.marker_size_m")
        h = 0.5 * cal.marker_size_m
        obj = np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])  # IPPE_SQUARE's order
        # Solved for the marker frame turned pi about its x (the corners BL, BR, TR, TL take
        # IPPE_SQUARE's order): facing the camera that pose is near identity, while the marker's own
        # pose would be near a pi rotation, where IPPE's rotation -> rvec step breaks down.
        img = np.asarray(corners, dtype=float).reshape(4, 2)[::-1].reshape(4, 1, 2)
        dist = cal.dist if cal.dist is not None else np.zeros(5)
        n, rvecs, tvecs, errs = cv2.solvePnPGeneric(obj, img, cal.K, dist, flags=cv2.SOLVEPNP_IPPE_SQUARE)
        errs = np.asarray(errs, dtype=float).reshape(-1)
        out = []
        for i in range(int(n)):
            r_cm = cv2.Rodrigues(rvecs[i])[0] @ _MJ_TO_CV  # back to the marker's frame (diag(1,-1,-1) = pi about x)
            t_w = cal.cam_pos + cal.cam_rot @ np.asarray(tvecs[i], dtype=float).reshape(3)
            if np.all(np.isfinite(t_w)) and np.all(np.isfinite(r_cm)) and np.isfinite(errs[i]):  # IPPE can return NaN
                out.append((t_w, cal.cam_rot @ r_cm, float(errs[i])))
        return sorted(out, key=lambda s: s[2])

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
        z = roll = pitch = tilt = None
        if self.cal.marker_size_m is not None:
            sols = self.solve_pnp(corners)
            if sols:
                z = float(sols[0][0][2])  # the lower-reprojection-error solution
                roll, pitch, tilt = roll_pitch_tilt(sols[0][1])
        pose = MarkerPose(
            float(centre[0]), float(centre[1]), heading, float(stamp), vx, vy, yaw_rate, corners, z, roll, pitch, tilt
        )
        self._last = pose
        self.seen += 1
        return pose
