"""Shared set-up: the real data and weights, found as the README says."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("ALPACA_DATASET", str(SHARED / "data" / "alpaca"))
os.environ.setdefault("ALPACA_WEIGHTS_DIR", str(SHARED / "weights"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# nbgrader calls alembic as a subprocess: keep this environment's bin/ on PATH.
os.environ["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session")
def dataset_dir():
    path = pathlib.Path(os.environ["ALPACA_DATASET"])
    if not path.is_dir():
        pytest.fail(f"The course dataset is missing: set ALPACA_DATASET (now {path}).")
    return path


@pytest.fixture(scope="session")
def weights_dir():
    path = pathlib.Path(os.environ["ALPACA_WEIGHTS_DIR"])
    if not path.is_dir():
        pytest.fail(f"The ImageNet weights are missing: set ALPACA_WEIGHTS_DIR (now {path}).")
    return path
