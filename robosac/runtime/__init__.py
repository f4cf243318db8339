"""The robot runtime: fixed-rate collector thread, learner process, persistence."""
