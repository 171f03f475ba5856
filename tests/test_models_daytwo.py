"""cnnlab.models for the workshop's second day: forecasters, text classifier, DCGAN pair
(hand-counted parameters, shapes, masking, dropout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cnnlab import models
from cnnlab.errors import CnnlabError


def dense(n_in, n_out):
    return n_in * n_out + n_out


def lstm(d, h):
    """Four gates, each with an input kernel (d, h), a recurrent kernel (h, h) and a bias."""
    return 4 * (d * h + h * h + h)


def count(model, x):
    """Parameters of ``model`` for input ``x``, from shapes only (nothing computed)."""
    return models.param_count(jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"])


def test_parameter_counts_by_hand():
    assert count(models.MLPForecaster(hidden=32), jnp.zeros((1, 12))) == \
        dense(12, 32) + dense(32, 1) == 449
    assert count(models.LSTMForecaster(hidden=32, horizon=3), jnp.zeros((1, 12, 2))) == \
        lstm(2, 32) + dense(32, 3)
    assert count(models.TextClassifier(), jnp.zeros((1, 7), jnp.int32)) == \
        5000 * 32 + lstm(32, 32) + dense(32, 2)
    # generator: dense to 7*7*128, two 4x4 transposed convs 128 -> 128, a 7x7 conv to 1 channel
    assert count(models.DCGANGenerator(), jnp.zeros((1, 100))) == \
        dense(100, 7 * 7 * 128) + 2 * (4 * 4 * 128 * 128 + 128) + 7 * 7 * 128 + 1 == 1_164_289
    # discriminator: two 3x3 stride-2 convs to 64, 28 -> 14 -> 7, dense 7*7*64 -> 1
    assert count(models.DCGANDiscriminator(), jnp.zeros((1, 28, 28, 1))) == \
        (9 * 64 + 64) + (9 * 64 * 64 + 64) + dense(7 * 7 * 64, 1) == 40_705


def test_forecasters_take_windows_with_or_without_a_feature_axis():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 12)), jnp.float32)
    for cls in models.sequence.FORECASTERS.values():
        model = cls(hidden=8, horizon=2)
        variables = model.init(jax.random.PRNGKey(1), x)
        y2, y3 = model.apply(variables, x), model.apply(variables, x[..., None])
        assert y2.shape == (5, 2)
        np.testing.assert_allclose(y2, y3, rtol=1e-6)


def test_text_classifier_ignores_padding_after_the_review():
    """The LSTM reads left to right and the mean skips index 0: extra trailing padding changes
    nothing, but a real word does."""
    model = models.TextClassifier(vocab_size=50, embed_dim=8, hidden=8, num_classes=3)
    short = jnp.array([[5, 9, 3, 0, 0], [7, 0, 0, 0, 0]])
    longer = jnp.concatenate([short, jnp.zeros((2, 4), jnp.int32)], axis=1)
    variables = model.init(jax.random.PRNGKey(0), short)
    a, b = model.apply(variables, short), model.apply(variables, longer)
    assert a.shape == (2, 3)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    c = model.apply(variables, longer.at[1, 1].set(4))
    assert not np.allclose(a[1], c[1])
    np.testing.assert_allclose(a[0], c[0], rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.apply(variables, jnp.zeros((1, 4), jnp.int32))).all()


def test_dcgan_pair_shapes_range_and_dropout():
    for shape in ((28, 28, 1), (8, 12, 3)):
        gen = models.DCGANGenerator(image_shape=shape, features=8)
        disc = models.DCGANDiscriminator(features=8)
        z = jnp.asarray(np.random.default_rng(0).standard_normal((3, 16)), jnp.float32)

        @jax.jit
        def run(z, gen=gen, disc=disc):
            images = gen.apply(gen.init(jax.random.PRNGKey(0), z), z)
            variables = disc.init(jax.random.PRNGKey(1), images)
            # dropout only in training, drawn from the "dropout" stream
            train = [disc.apply(variables, images, train=True, rngs={"dropout": jax.random.PRNGKey(k)})
                     for k in (2, 3)]
            return images, disc.apply(variables, images), train

        images, logits, (t1, t2) = run(z)
        assert images.shape == (3, *shape) and logits.shape == (3,)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert not np.allclose(t1, t2) and not np.allclose(t1, logits)
    with pytest.raises(CnnlabError, match="multiples of 4"):
        models.DCGANGenerator(image_shape=(30, 30, 1))
