"""OpenCV's diffusion fills (`telea`, `ns`) through the shared method contract."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.methods import inpaint


@pytest.mark.parametrize("method", ["telea", "ns"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_smooth_ramp_is_filled_smoothly(method, dtype):
    top = np.iinfo(dtype).max
    ramp = np.tile(np.linspace(0, top, 60), (40, 1)).astype(dtype)
    hole = np.zeros(ramp.shape, bool)
    hole[10:20, 15:35] = True
    filled = inpaint(ramp, hole, method).astype(np.float64)
    known = ramp[:, 10:40].astype(np.float64)
    assert known.min() <= filled[hole].min() and filled[hole].max() <= known.max()
    # Along each row the fill keeps rising, as the ramp does: no noise in the hole.
    steps = np.diff(filled[10:20, 14:36], axis=1)
    assert (steps >= -0.02 * top).all()
