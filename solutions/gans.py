"""Lab 9 — Generative adversarial networks: the two losses, transposed convolutions, a DCGAN.

Two networks play against each other. The *discriminator* D sees an image and returns one logit
("real" when large); the *generator* G turns a vector of random numbers z (the latent vector)
into an image. D is trained to tell real images from G's; G is trained to make D call its
images real. Each network is updated by its own loss only, with its own optimizer.

Probabilities are kept as logits: ``D(x) = sigmoid(logit)`` and, for a logit ``l``,
``-log sigmoid(l) = softplus(-l)`` and ``-log(1 - sigmoid(l)) = softplus(l)``
(``jax.nn.softplus`` never overflows where ``log(sigmoid(l))`` would give -inf).

The workshop's first GAN is one-dimensional: its real data are points on a parabola
(``quadratic_samples``), and two small MLPs (``Generator1D``, ``Discriminator1D``) play the
game; ``gan_train_step`` trains either pair. The DCGAN generator upsamples with *transposed
convolutions*: where a stride-2 convolution
halves the image, a stride-2 transposed convolution doubles it (7x7 -> 14x14 -> 28x28).
Images are float32 (N, H, W, C) in [0, 1], as ``cnnlab.data.normalize`` gives them.
Lecture: 002_7bece5f3dd1db8ed.txt, "Programmes" (day 2): "Lecture 2 – Generative Adversarial
Networks", "Activity 4 – Develop a 1D GAN", "Activity 5 – Develop a DCGAN for Greyscale
Handwritten Digits".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Binary cross-entropy of the discriminator: real images are labelled 1, generated ones 0.

    ``loss = mean(-log D(real)) + mean(-log(1 - D(fake)))
           = mean(softplus(-real_logits)) + mean(softplus(fake_logits))``

    Logits of any shape (usually (N,)); returns a float32 scalar. A discriminator that cannot
    tell (all logits 0) scores ``2 log 2 = 1.386``; a perfect one scores 0.
    """
    # BEGIN SOLUTION
    # HINT: the mean over each batch: softplus(-logit) for the real ones, softplus(logit) for the fakes
    return jax.nn.softplus(-real_logits).mean() + jax.nn.softplus(fake_logits).mean()
    # END SOLUTION


def generator_loss(fake_logits: jax.Array, *, non_saturating: bool = True) -> jax.Array:
    """The generator's loss on the discriminator's logits for generated images.

    - non-saturating (the default, used in practice): ``mean(-log D(G(z))) =
      mean(softplus(-fake_logits))``: large and steep when D rejects the fakes;
    - saturating (the original minimax game): ``mean(log(1 - D(G(z)))) =
      -mean(softplus(fake_logits))``: when D confidently rejects the fakes (logits << 0) its
      gradient vanishes and G stops learning, which is why nobody trains with it.

    Returns a float32 scalar; both decrease as D is fooled more.
    """
    # BEGIN SOLUTION
    # HINT: softplus(-l) for the non-saturating loss, -softplus(l) for the saturating one
    if non_saturating:
        return jax.nn.softplus(-fake_logits).mean()
    return -jax.nn.softplus(fake_logits).mean()
    # END SOLUTION


# --- Activity 4: a 1-D GAN (points on a parabola) -------------------------------------------


def quadratic_samples(key: jax.Array, n: int) -> jax.Array:
    """The real data of the workshop's 1-D GAN: ``n`` points of the curve ``y = x**2``.

    ``x = jax.random.uniform(key, (n,), minval=-0.5, maxval=0.5)`` (exactly this call: the
    grader compares with the same key), then the rows ``[x, x**2]``: float32 (n, 2). The
    generator never sees this function; it only learns, through the discriminator, to draw
    points that lie on the curve.

    >>> quadratic_samples(jax.random.PRNGKey(0), 3).shape
    (3, 2)
    """
    # BEGIN SOLUTION
    # HINT: the one jax.random.uniform call of the docstring, then jnp.stack([x, x ** 2], axis=1)
    x = jax.random.uniform(key, (n,), minval=-0.5, maxval=0.5)
    return jnp.stack([x, x ** 2], axis=1)
    # END SOLUTION


class Generator1D(nn.Module):
    """The 1-D GAN's generator: latent points to 2-D points.

    ``z`` (N, latent) -> ``nn.Dense(hidden)`` + ReLU -> ``nn.Dense(2)`` (linear: the points may
    be anywhere) -> (N, 2). The workshop's generator has a latent size of 5 and 15 hidden units.
    Parameter tree: Dense_0, Dense_1. ``train`` changes nothing here.
    """

    hidden: int = 15

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        # BEGIN SOLUTION
        # HINT: nn.Dense(self.hidden), nn.relu, nn.Dense(2) with no activation after it
        return nn.Dense(2)(nn.relu(nn.Dense(self.hidden)(z)))
        # END SOLUTION


class Discriminator1D(nn.Module):
    """The 1-D GAN's discriminator: is a 2-D point on the curve?

    ``x`` (N, 2) -> ``nn.Dense(hidden)`` + ReLU -> ``nn.Dense(1)`` -> logits (N,) (drop the last
    axis). The workshop's discriminator has 25 hidden units and a sigmoid output; here the
    output is the logit and the sigmoid lives in the losses (``discriminator_loss``), as for
    the DCGAN.
    Parameter tree: Dense_0, Dense_1. ``train`` changes nothing here.
    """

    hidden: int = 25

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # BEGIN SOLUTION
        # HINT: nn.Dense(self.hidden), nn.relu, nn.Dense(1), then [:, 0]
        return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))[:, 0]
        # END SOLUTION


# --- Activity 5: a DCGAN ---------------------------------------------------------------------


def conv_transpose_output_size(input_size: int, kernel_size: int, stride: int = 1,
                               padding: int = 0, output_padding: int = 0) -> int:
    """The output length of a transposed convolution along one axis:

        ``(W - 1) S - 2P + K + output_padding``

    the inverse of the convolution's ``(W - K + 2P) / S + 1`` (PyTorch's ``ConvTranspose2d``
    convention: ``padding`` P crops P pixels off each side of the full output, ``output_padding``
    adds back rows at the end when S > 1, since several input sizes convolve to the same size).
    Examples: W=7, K=4, S=2, P=1 -> 14 (the DCGAN step 7x7 -> 14x14); W=3, K=3, S=1 -> 5.
    Raises ``ValueError`` when ``output_padding >= stride`` or the result would be < 1.
    """
    # BEGIN SOLUTION
    # HINT: check output_padding < stride, then the formula; raise ValueError if it is < 1
    if output_padding >= stride or output_padding < 0:
        raise ValueError(f"output_padding must be in [0, stride), got {output_padding} "
                         f"with stride {stride}")
    size = (input_size - 1) * stride - 2 * padding + kernel_size + output_padding
    if size < 1:
        raise ValueError(f"the output would have {size} pixels")
    return size
    # END SOLUTION


def conv_transpose2d(x: jax.Array, w: jax.Array, b: jax.Array, *, stride: int = 1,
                     padding: int = 0) -> jax.Array:
    """A transposed convolution by hand, for one image: every input pixel *paints* a copy of
    the kernel, scaled by its values, onto the output; overlapping copies add up.

    ``x`` (H, W, C), ``w`` (KH, KW, C, O), ``b`` (O,). Input pixel (i, j) adds ``x[i, j] @
    w[u, v]`` (an O-vector) to the full output at ``(S i + u, S j + v)`` for every kernel offset
    (u, v); the full output is ((H - 1) S + KH, (W - 1) S + KW, O); then P rows/columns are cut
    from each side and ``b`` is added: (H', W', O) with ``H' = (H - 1) S - 2P + KH``.

    This is the transpose (the gradient) of lab 2's strided convolution, and equals
    ``lax.conv_transpose(x[None], w[::-1, ::-1], (S, S), [(KH - 1 - P,) * 2, (KW - 1 - P,) * 2],
    dimension_numbers=("NHWC", "HWIO", "NHWC"))[0] + b`` (lax flips the kernel: it computes a
    convolution of the input spread out with S - 1 zeros between pixels). From scratch: no
    ``lax.conv*``. Hint: loop over the KH*KW kernel offsets, not over pixels: for offset (u, v)
    all pixels land on a strided grid, ``full.at[u:u + S(H-1) + 1:S, v:v + S(W-1) + 1:S].add(x @
    w[u, v])``. ``stride`` and ``padding`` are plain Python ints.
    """
    # BEGIN SOLUTION
    # HINT: full = zeros((H-1)S + KH, (W-1)S + KW, O); for each (u, v): full.at[u::S-grid, v::S-grid].add(x @ w[u, v]); crop P; + b
    h, wd, _ = x.shape
    kh, kw, _, o = w.shape
    s = stride
    full = jnp.zeros(((h - 1) * s + kh, (wd - 1) * s + kw, o), jnp.result_type(x, w))
    for u in range(kh):
        for v in range(kw):
            full = full.at[u:u + s * (h - 1) + 1:s, v:v + s * (wd - 1) + 1:s].add(x @ w[u, v])
    out = full[padding:full.shape[0] - padding, padding:full.shape[1] - padding]
    return out + b
    # END SOLUTION


class Generator(nn.Module):
    """The DCGAN generator of the workshop (for 28x28 greyscale digits).

    ``z`` (N, latent) -> ``nn.Dense(7 * 7 * features)`` + leaky ReLU (slope 0.2) -> reshape to
    (N, 7, 7, features) -> twice ``nn.ConvTranspose(features, (4, 4), strides=(2, 2),
    padding="SAME")`` + leaky ReLU (7 -> 14 -> 28) -> ``nn.Conv(channels, (7, 7),
    padding="SAME")`` -> sigmoid: images (N, 28, 28, channels) in [0, 1].

    ``base`` is the side of the first feature map (7 for 28x28 images; 2 gives 8x8 images).
    Parameter tree: Dense_0, ConvTranspose_0, ConvTranspose_1, Conv_0 (kernels and biases).
    ``train`` changes nothing here.
    """

    features: int = 128
    base: int = 7
    channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        # BEGIN SOLUTION
        # HINT: nn.Dense, nn.leaky_relu(x, 0.2), reshape to (N, base, base, features), two ConvTranspose, Conv, sigmoid
        x = nn.leaky_relu(nn.Dense(self.base * self.base * self.features)(z), 0.2)
        x = x.reshape(z.shape[0], self.base, self.base, self.features)
        for _ in range(2):
            x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME")(x)
            x = nn.leaky_relu(x, 0.2)
        return nn.sigmoid(nn.Conv(self.channels, (7, 7), padding="SAME")(x))
        # END SOLUTION


class Discriminator(nn.Module):
    """The DCGAN discriminator of the workshop: a small CNN with one logit out.

    Twice ``nn.Conv(features, (3, 3), strides=(2, 2), padding="SAME")`` + leaky ReLU (slope 0.2)
    + ``nn.Dropout(dropout)`` (active only when ``train``; rng stream "dropout") -> flatten ->
    ``nn.Dense(1)`` -> logits (N,) (drop the last axis). 28x28x1 -> 14x14 -> 7x7 -> 7*7*features.
    Parameter tree: Conv_0, Conv_1, Dense_0 (kernels and biases).
    """

    features: int = 64
    dropout: float = 0.4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # BEGIN SOLUTION
        # HINT: a loop of two (nn.Conv, nn.leaky_relu, nn.Dropout(rate, deterministic=not train)); reshape; nn.Dense(1); [:, 0]
        for _ in range(2):
            x = nn.Conv(self.features, (3, 3), strides=(2, 2), padding="SAME")(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(nn.leaky_relu(x, 0.2))
        return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]
        # END SOLUTION


TrainState = train_state.TrainState


def gan_train_step(g_state: TrainState, d_state: TrainState, real_images: jax.Array,
                   z: jax.Array) -> tuple[TrainState, TrainState, dict]:
    """One step of GAN training, two optimizers, each network moved by its own loss only.

    ``g_state`` / ``d_state``: Flax ``TrainState`` of the generator / discriminator (``apply_fn``
    called as ``apply_fn({"params": params}, input)``; ``tx`` its own optimizer).
    ``real_images`` (N, H, W, C), ``z`` (N, latent).

    1. Discriminator: ``fake = G(z)`` with the generator's current parameters;
       ``d_loss(d_params) = discriminator_loss(D(real_images), D(fake))``; its gradient with
       respect to ``d_params`` only; ``d_state.apply_gradients``. The generator does not move.
    2. Generator, against the *updated* discriminator: ``g_loss(g_params) =
       generator_loss(D(G(z)))`` (non-saturating); its gradient with respect to ``g_params``
       only; ``g_state.apply_gradients``. The discriminator does not move: bit-identical.

    Returns ``(g_state, d_state, {"d_loss": ..., "g_loss": ...})`` (the losses before each
    update, float32 scalars). The grader also runs it with one network's optimizer frozen and
    checks that its parameters come back bit-identical.
    """
    # BEGIN SOLUTION
    # HINT: two loss functions, each of its own network's params; jax.value_and_grad; apply_gradients twice
    fake = g_state.apply_fn({"params": g_state.params}, z)

    def d_loss_fn(d_params):
        real_logits = d_state.apply_fn({"params": d_params}, real_images)
        fake_logits = d_state.apply_fn({"params": d_params}, fake)
        return discriminator_loss(real_logits, fake_logits)

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_state.params)
    d_state = d_state.apply_gradients(grads=d_grads)

    def g_loss_fn(g_params):
        fake_logits = d_state.apply_fn({"params": d_state.params},
                                       g_state.apply_fn({"params": g_params}, z))
        return generator_loss(fake_logits)

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g_state.params)
    g_state = g_state.apply_gradients(grads=g_grads)
    return g_state, d_state, {"d_loss": d_loss, "g_loss": g_loss}
    # END SOLUTION

