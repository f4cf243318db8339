"""The robots' twin: MuJoCo models, fast simulation, the real-time twin and the servo emulator.

Modules: `mujoco_sim` (fast simulation API: `MujocoSim`), `servo_model` (X-series figures → actuator
parameters), `randomization` (domain randomisation knobs), `realtime` (`RealtimeTwin`: the model in
real time behind the servo emulator), `camera_server` (MJPEG over HTTP for cv2.VideoCapture),
`assets` (the generated ArUco texture), `twin_cli` (`robosac twin`), `dxl` (the Protocol 2.0
servo-chain emulator), `models/` (MJCF). Importing `sim` imports nothing heavy.
"""
