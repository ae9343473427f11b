"""Shared test helpers: the reference fixtures copied from the reference code's runs (see fixtures/README.md)."""

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_json(name: str):
    return json.loads((FIXTURES / name).read_text())


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
