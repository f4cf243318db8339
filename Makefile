# The two commands in the README: `make demo` (set up, train) and `make test` (set up, run the tests).
VENV := .venv
export MUJOCO_GL ?= egl

.PHONY: demo test bench

# Train the claw on the real-time twin (the same code path as the bench robot), ~6 min; each run
# gets its own directory under runs/ (a run directory is never overwritten).
demo:
	bash tools/setup_venv.sh test
	$(VENV)/bin/robosac train hardware_configs/claw.yaml --twin --steps 3000 --learning-starts 500 \
		--batch-size 128 --eval-episodes 2 --seed 0 --out runs/claw-$$(date +%Y%m%d-%H%M%S)

# Two pytest runs side by side: the CPU-bound tests at nice 19 beside the timing-sensitive ones.
test:
	bash tools/setup_venv.sh test
	$(VENV)/bin/python tools/run_tests.py

bench:
	bash tools/setup_venv.sh "test,bench"
	$(VENV)/bin/python benchmarks/sac_vs_sb3.py
