# The two commands in the README: `make demo` (set up, train) and `make test` (set up, run the tests).
VENV := .venv
export MUJOCO_GL ?= egl

.PHONY: demo test bench

demo:
	bash tools/setup_venv.sh test
	$(VENV)/bin/robosac train Pendulum-v1 --steps 10000 --seed 0 --lr 1e-3 --out runs/demo

test:
	bash tools/setup_venv.sh test
	$(VENV)/bin/python -m pytest -q

bench:
	bash tools/setup_venv.sh "test,bench"
	$(VENV)/bin/python benchmarks/sac_vs_sb3.py
