"""AlexNet is the reference's network."""

import numpy as np
import pytest

from alexnet.model import build_alexnet


@pytest.mark.parametrize("classes, params", [(2, 58_289_538), (1000, 62_378_344)])
def test_parameter_counts_match_the_reference(classes, params):
    assert build_alexnet(classes, 227).count_params() == params


def test_layer_shapes_match_the_reference():
    model = build_alexnet(2, 227)
    shapes = {layer.name: layer.output_shape[1:] for layer in model.layers}
    assert shapes["conv1"] == (55, 55, 96) and shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256) and shapes["pool2"] == (13, 13, 256)
    assert shapes["conv5"] == (13, 13, 256) and shapes["pool5"] == (6, 6, 256)
    assert shapes["flatten"] == (9216,) and shapes["predictions"] == (2,)


def test_small_inputs_and_uint8_batches():
    model = build_alexnet(3, 67, seed=1)
    probs = model.predict(np.full((2, 67, 67, 3), 255, np.uint8), verbose=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="minimum of 67"):
        build_alexnet(2, 66)


def test_seed_makes_initial_weights_reproducible():
    a, b = build_alexnet(2, 67, seed=7), build_alexnet(2, 67, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
