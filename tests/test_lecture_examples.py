"""The lectures' worked examples, numbers in and numbers out (the slide texts are in
``../shared/lectures/``, one file per deck).

For every example: the reference solution gives the lecture's numbers; a case of the exercise's
spec has exactly the lecture's inputs (students are graded on it); and the exercise's docstring
(or its lab's module docstring) quotes the example and cites the deck by file name and slide.
When the lecture texts are present beside the checkout, the quoted numbers are also found in
the deck itself, so that a wrong transcription (the convolution lab once had another 5x5 image)
cannot pass.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grader import specs
from grader.specs import cnn_models as cnn_specs
from grader.specs import convolution as conv_specs
from grader.specs import pooling as pool_specs
from grader.specs import transfer as transfer_specs

ROOT = Path(__file__).resolve().parent.parent
LECTURES = next((p / "shared" / "lectures" for p in Path(__file__).resolve().parents[1:4]
                 if (p / "shared" / "lectures").is_dir()),
                Path(__file__).resolve().parents[2] / "shared" / "lectures")
SANTA, ANN, SEMINAR, FASTAI, WORKSHOP = ("001_8ff93c9bfb889e45.txt", "002_7bece5f3dd1db8ed.txt",
                                         "003_dd4e96de96f4046f.txt", "004_9604be48adb20edc.txt",
                                         "000_271ae1d9aab5f653.txt")


@dataclasses.dataclass(frozen=True)
class Example:
    """One worked example of a lecture.

    ``expected`` is what the slide states; ``shown`` picks from the exercise's output the part
    the slide shows (the first value, a shape, the weights without biases ...). ``quotes`` must
    all appear in the docstring students read; ``in_deck`` must all appear in the deck's text
    (whitespace-insensitive), when the deck is available.
    """

    name: str
    deck: str
    slide: str
    exercise: str                       # module.function
    args: tuple
    expected: Any
    kwargs: dict = dataclasses.field(default_factory=dict)
    shown: Callable[[Any], Any] = lambda out: out
    quotes: tuple[str, ...] = ()
    in_deck: tuple[str, ...] = ()
    sizes_only: bool = False            # the slide gives sizes only: a case of the same shapes


def f32(x):
    return np.asarray(x, np.float32)


def _logits_shape(model_out):
    return tuple(model_out["logits"].shape)


EXAMPLES = [
    Example("5x5 image, vertical-edge kernel", SANTA, "Convolutional Neural Networks: why?",
            "convolution.conv2d_single", (f32(conv_specs.FIVE), f32(conv_specs.VERTICAL)),
            [[-3, 4, -7], [-3, 0, -8], [-4, -9, -10]],
            quotes=("[[3, 2, 3, 1, 8]", "[[-3, 4, -7], [-3, 0, -8], [-4, -9, -10]]"),
            in_deck=("3 2 3 1 8 1 9 1 3 2 2 3 5 6 6 3 2 3 5 9 1 1 2 4 5",
                     "-3 4 -7 -3 0 -8 -4 -9 -10", "1 0 -1 1 0 -1 1 0 -1",
                     "3*1+1*1+2*1+0*2+0*9+0*3+3*(-1)+1*(-1)+5*(-1) = -3",
                     "2*1+9*1+3*1+0*3+0*1+0*5+1*(-1)+3*(-1)+6*(-1) = 4")),
    Example("an edge", SANTA, "What if there is an edge?", "convolution.conv2d_single",
            (f32(conv_specs.EDGE6), f32(conv_specs.VERTICAL)), [[0, 24, 24, 0]] * 4,
            quotes=("What if there is an edge?", "[0, 24, 24, 0]"),
            in_deck=("8 8 8 0 0 0 " * 6 + "1 0 -1 1 0 -1 1 0 -1 " + "0 24 24 0 " * 4,)),
    Example("Santa: 64*64*3 inputs into 128 units", SANTA, "Convolutional Neural Networks: why?",
            "convolution.dense_param_count", ((64, 64, 3), 128), "~1.5 M",
            shown=lambda n: "~1.5 M" if 1.5e6 <= n - 128 < 1.6e6 else n,
            quotes=("~ 1.5 M weights",),
            in_deck=("n = 64\\*64\\*3= 12288", "128 nodes in the first hidden layer",
                     "Weight matrix: ~ 1.5 M weights")),
    Example("1000*1000*3 inputs into 1000 units", SANTA, "Convolutional Neural Networks: why?",
            "convolution.dense_param_count", ((1000, 1000, 3), 1000), 3_000_000_000,
            shown=lambda n: n - 1000, quotes=("3 Billion parameters",),
            in_deck=("1000\\*1000\\*3", "Weight matrix: 3 Billion parameters")),
    Example("1000 examples, batch 500", SANTA, "epochs, batch size and iterations",
            "training.steps_per_epoch", (1000, 500), 2,
            quotes=("it will take 2 iterations to complete 1 epoch",),
            in_deck=("if you have 1000 training examples, and your batch size is 500, then it "
                     "will take 2 iterations to complete 1 epoch",)),
    Example("64x64x3 image as one vector", SANTA, "Convolutional Neural Networks: why?",
            "pooling.flatten", (np.zeros((1, 64, 64, 3), np.float32),), (1, 12288),
            shown=lambda out: tuple(out.shape), quotes=("n = 64*64*3 = 12288",), sizes_only=True,
            in_deck=("n = 64\\*64\\*3= 12288",)),
    Example("without padding", ANN, "Image Convolution: Settings – Padding",
            "convolution.conv2d_single", (f32(conv_specs.PAD5), f32(conv_specs.PAD_KERNEL)), -2,
            shown=lambda out: out[0, 0], quotes=("Without Padding", "first value is -2"),
            in_deck=("Without Padding 1 2 0 3 1 1 0 0 2 2 2 1 2 1 1 0 0 1 0 0 1 2 1 1 1 input "
                     "-1 1 2 1 1 0 -1 -2 0 kernel -2 output",)),
    Example("the padded input", ANN, "Image Convolution: Settings – Padding", "convolution.zero_pad",
            (f32(conv_specs.PAD5)[:, :, None], 1),
            [[0] * 7] + [[0, *row, 0] for row in conv_specs.PAD5] + [[0] * 7],
            shown=lambda out: out[:, :, 0], quotes=("With Padding", "[[1, 2, 0, 3, 1]"),
            in_deck=("With Padding 0 0 0 0 0 0 0 0 1 2 0 3 1 0 0 1 0 0 2 2 0 0 2 1 2 1 1 0 "
                     "0 0 0 1 0 0 0 0 1 2 1 1 1 0 0 0 0 0 0 0 0 input",)),
    Example("with padding", ANN, "Image Convolution: Settings – Padding", "convolution.conv2d",
            (f32(conv_specs.PAD5)[:, :, None], f32(conv_specs.PAD_KERNEL)[:, :, None, None],
             f32([0.0])), -1, kwargs={"padding": 1}, shown=lambda out: out[0, 0, 0],
            quotes=("With Padding", "first value is -1"),
            in_deck=("-1 1 2 1 1 0 -1 -2 0 kernel -1 output",)),
    Example("max pooling 2x2, stride 2", FASTAI, "MAX POOLING", "pooling.max_pool",
            (f32(pool_specs.LECTURE)[:, :, None],), [[6, 8], [3, 4]],
            shown=lambda out: out[:, :, 0], quotes=("MAX POOLING", "[[6, 8],"),
            in_deck=("1 1 2 4 5 6 7 8 3 2 1 0 1 2 3 4", "max pool with 2x2 filters and stride 2",
                     "6 8 3 4")),
    Example("f = (x + y) z", FASTAI, "Backpropagation: a simple example",
            "neurons.add_multiply_backward", (-2.0, 5.0, -4.0),
            {"f": -12.0, "dx": -4.0, "dy": -4.0, "dz": 3.0},
            quotes=("x = -2, y = 5, z = -4", "f = -12, df/dx = -4"),
            in_deck=("f(x, y, z) = (x + y)z", "x = -2, y = 5, z = -4")),
    Example("a 5x5x3 chunk: 75-dimensional dot product + bias", FASTAI,
            "Fully Connected vs Convolutional", "convolution.conv_param_count", (5, 3, 1), 76,
            quotes=("5*5*3 = 75",),
            in_deck=("5\\*5\\*3 = 75-dimensional dot product + bias",)),
    Example("32x32x3 image stretched to 3072", FASTAI, "Fully Connected vs Convolutional",
            "pooling.flatten", (np.zeros((2, 32, 32, 3), np.float32),), (2, 3072),
            shown=lambda out: tuple(out.shape), quotes=("32x32x3 image -> stretch to 3072 x 1",),
            sizes_only=True,
            in_deck=("32x32x3 image -> stretch to 3072 x 1",)),
    Example("sigmoid derivative at most .25", ANN, "ANN: Issue with ANN and Sigmoid",
            "neurons.sigmoid_derivative", (f32([0.0]),), [0.25],
            quotes=("<= .25",), in_deck=("\\leq .25",)),
    Example("ResNet50's predictions for cat.jpg", SEMINAR, "the ResNet50 example",
            "transfer.decode_predictions", (transfer_specs.lecture_probs(),
                                            transfer_specs.imagenet_names()),
            [[("tabby", 0.474), ("lynx", 0.399), ("Egyptian cat", 0.048)]],
            quotes=("Tabby 47.4%, Lynx 39.9%, Egyptian cat 4.8%",),
            in_deck=("decode_predictions(preds, top=3)[0]", "Tabby 47.4%", "Lynx 39.9%",
                     "Egyptian cat 4.8%")),
    Example("the seminar CNN at 32x32x1, 100 classes", SEMINAR, "Convolutional Neural Networks",
            "cnn_models.SeminarCNN", (np.zeros((2, 32, 32, 1), np.float32), np.array([0, 3], np.uint32)),
            (2, 100), shown=_logits_shape, sizes_only=True,
            quotes=("input_shape=(1, 32, 32)", "Dense(100, activation='softmax')"),
            in_deck=("Conv2D(4, kernel_size=(5, 5), activation='relu', input_shape=(1, 32, 32))",
                     "Dense(100, activation='softmax')")),
    Example("the workshop CNN: 28x28x1 into 10 categories", WORKSHOP, "Construct a model",
            "cnn_models.WorkshopCNN", (np.zeros((2, 28, 28, 1), np.float32),
                                       np.array([0, 0], np.uint32)), (2, 10),
            kwargs={"num_classes": 10}, shown=_logits_shape, sizes_only=True,
            quotes=("3 layers with 16, 32 and 64 filters", "one of 10 categories"),
            in_deck=("3 layers with 16, 32 and 64 filters", "subsample by a factor of 2",
                     "one of 10 categories")),
]


def _load_solution(module: str):
    name = f"lecture_solutions_{module}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "solutions" / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod        # Flax modules (dataclasses) look their module up there
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _run_reference(ex: Example):
    module, fn = ex.exercise.split(".")
    obj = getattr(_load_solution(module), fn)
    if inspect.isclass(obj):   # a Flax model: init + apply, as the grader's model driver does
        x, key = ex.args
        model = obj(**ex.kwargs)
        variables = model.init(jnp.asarray(key), jnp.asarray(x), train=False)
        return {"params": variables["params"], "logits": model.apply(variables, x, train=False)}
    args = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in ex.args]
    return obj(*args, **ex.kwargs)


def _same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() \
            and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) != len(b):
        return False
    if isinstance(a, list | tuple) and any(isinstance(v, str | tuple | list | dict) for v in a):
        return all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                rtol=1e-6, atol=1e-6)) and np.shape(a) == np.shape(b)
    except (TypeError, ValueError):
        return a == b


def _docstrings(ex: Example) -> str:
    """The lab's module docstring and the exercise's own, as students read them in exercises/."""
    module_name, fn = ex.exercise.split(".")
    tree = ast.parse((ROOT / "exercises" / f"{module_name}.py").read_text())
    docs = [ast.get_docstring(tree) or ""]
    docs += [ast.get_docstring(n) or "" for n in tree.body
             if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == fn]
    return "\n".join(docs)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_the_reference_gives_the_lectures_numbers(ex):
    got = ex.shown(_run_reference(ex))
    assert _same(got, ex.expected), f"{ex.exercise} on {ex.deck} '{ex.slide}': {got} != {ex.expected}"


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_the_example_is_a_graded_case(ex):
    module, fn = ex.exercise.split(".")
    exercise = next(e for e in specs.load(module) if e.name == fn)
    matching = [c for c in exercise.cases if c.mode in ("call", "driver:flax_model")
                and _same_inputs(c.args, ex.args, ex.sizes_only)
                and _same_inputs(c.kwargs, ex.kwargs, ex.sizes_only)]
    assert matching, f"no public case of {ex.exercise} has the inputs of {ex.deck} '{ex.slide}'"


def _same_inputs(a, b, sizes_only: bool = False) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() \
            and all(_same_inputs(a[k], b[k], sizes_only) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) \
            and all(_same_inputs(x, y, sizes_only) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.shape != b.shape:
            return False
        if sizes_only or a.dtype == np.uint32 and a.shape == (2,):  # PRNG keys: any key will do
            return a.dtype == b.dtype
        return a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_the_exercise_quotes_and_cites_the_lecture(ex):
    doc = _squash(_docstrings(ex))
    assert ex.deck in doc, f"{ex.exercise}'s docstring does not cite {ex.deck}"
    for quote in ex.quotes:
        assert _squash(quote) in doc, f"{ex.exercise}'s docstring does not quote {quote!r}"


@pytest.mark.skipif(not LECTURES.is_dir(), reason=f"the lecture texts are not at {LECTURES} "
                    "(they live beside the repository, not in it)")
@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_the_numbers_are_the_decks(ex):
    deck = _squash((LECTURES / ex.deck).read_text())
    for text in ex.in_deck:
        assert _squash(text) in deck, f"{ex.deck} does not contain {text!r}"
    if ex.slide[0].isupper():  # a title (lower case: a description of untitled slides)
        for part in re.split(r": | – ", ex.slide):
            assert _squash(part).lower() in deck.lower(), f"no slide {ex.slide!r} in {ex.deck}"


def test_every_exercise_docstring_cites_a_deck_or_its_lab_does():
    """Students read the lectures' words in every lab: each module docstring cites a deck."""
    for module in specs.MODULES:
        doc = ast.get_docstring(ast.parse((ROOT / "exercises" / f"{module}.py").read_text()))
        assert re.search(r"00[0-4]_[0-9a-f]{16}\.txt", doc), module


def test_every_lecture_exercise_is_in_the_concept_table():
    """``exercises/README.md`` maps the lectures' concepts to exercises and library features:
    every exercise of a lab that follows the decks is there, and every name it gives exists."""
    table = (ROOT / "exercises" / "README.md").read_text()
    for module in specs.MODULES:
        doc = ast.get_docstring(ast.parse((ROOT / "solutions" / f"{module}.py").read_text())) or ""
        if not re.search(r"\d{3}_[0-9a-f]{16}\.txt", doc):
            continue   # a lab that does not follow these decks
        for ex in specs.load(module):
            assert f"`{module}.{ex.name}`" in table, f"{module}.{ex.name} is not in the table"
    every = {f"{e.module}.{e.name}" for e in specs.load_all()}
    named = {n for n in re.findall(r"`((?:%s)\.\w+)`" % "|".join(specs.MODULES), table)
             if not n.endswith(".py")}   # not the file names
    assert named and named <= every, sorted(named - every)
    import cnnlab.transfer

    for feature in re.findall(r"`cnnlab\.transfer\.(\w+)`", table):
        assert hasattr(cnnlab.transfer, feature), feature
