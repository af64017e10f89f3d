"""Synthetic classification datasets with planted label errors, for demos, tests and benchmarks.

The generative model:

- a true class ``j`` drawn from a prior, uniform or geometrically imbalanced;
- a given (noisy) label ``i`` drawn from column ``j`` of a noise matrix
  ``P(given=i | true=j)``: ``1 - noise_rate`` on the diagonal, the rest spread
  over the other classes with random (Dirichlet) weights, so some class pairs
  are confused far more often than others;
- out-of-sample predictions ``softmax(logits)`` with standard normal logits
  plus a boost on the true class whose size varies from example to example
  (gamma distributed, scaled by ``sqrt(2 ln K)`` so accuracy does not collapse
  as K grows); a fraction of examples are hard (boost near zero).

Confident Learning finds most planted errors on such data (precision and
recall roughly 0.7-0.9 at ``noise_rate=0.2``).

Generation is chunked: :func:`write_demo_dataset` draws and writes one file at
a time, so memory stays bounded for any number of rows. File ``i`` is drawn
from the random stream ``[seed, i]`` and equals
``make_noisy_dataset(rows_per_file, ...)`` for ``i = 0``.
"""

import numpy as np

from labelscan.errors import UsageError
from labelscan.io.partset import PartSetWriter, prediction_table

NOISE_MODEL_STREAM = 2**32
BOOST_SHAPE = 4.0
BOOST_SCALE = 0.55
HARD_FRACTION = 0.08
HARD_BOOST_STD = 0.5


def noise_model(num_classes, *, noise_rate=0.2, class_imbalance=0.0, seed=0):
    """Class prior and noise matrix of a synthetic dataset.

    Parameters
    ----------
    num_classes : int
        K, at least 2.
    noise_rate : float
        Probability that the given label differs from the true class, in [0, 1].
    class_imbalance : float
        0 for balanced classes; ``c`` makes class 0 ``e**c`` times as frequent
        as class K-1 (prior proportional to ``exp(-c * k / (K-1))``).
    seed : int

    Returns
    -------
    prior : numpy.ndarray
        (K,) float64 true-class probabilities, summing to 1.
    noise_matrix : numpy.ndarray
        (K, K) float64 ``P(given=i | true=j)`` at ``[i, j]``; columns sum to 1.
    """
    if num_classes < 2:
        raise UsageError("a noisy dataset needs at least 2 classes")
    if not 0 <= noise_rate <= 1:
        raise UsageError("noise_rate must lie in [0, 1]")
    rng = np.random.default_rng([seed, NOISE_MODEL_STREAM])
    prior = np.exp(-class_imbalance * np.linspace(0, 1, num_classes))
    prior /= prior.sum()
    noise_matrix = np.zeros((num_classes, num_classes))
    for true_class in range(num_classes):
        others = np.arange(num_classes) != true_class
        noise_matrix[others, true_class] = noise_rate * rng.dirichlet(np.ones(num_classes - 1))
        noise_matrix[true_class, true_class] = 1 - noise_rate
    return prior, noise_matrix


def sample_examples(rng, num_rows, prior, noise_matrix, dtype=np.float32):
    """Draw examples from a noise model.

    Parameters
    ----------
    rng : numpy.random.Generator
    num_rows : int
        N.
    prior : numpy.ndarray
        (K,) true-class probabilities.
    noise_matrix : numpy.ndarray
        (K, K) ``P(given=i | true=j)``.
    dtype : numpy.dtype
        float16, float32 or float64 for ``pred_probs``.

    Returns
    -------
    dict
        ``labels`` (N,) int64 given labels, ``true_labels`` (N,) int64,
        ``pred_probs`` (N, K) of ``dtype``, rows summing to 1 up to rounding.
    """
    num_classes = len(prior)
    true_labels = rng.choice(num_classes, size=num_rows, p=prior)
    labels = np.empty(num_rows, dtype=np.int64)
    for true_class in range(num_classes):
        rows = np.flatnonzero(true_labels == true_class)
        labels[rows] = rng.choice(num_classes, size=len(rows), p=noise_matrix[:, true_class])
    boost = rng.gamma(BOOST_SHAPE, BOOST_SCALE * np.sqrt(2 * np.log(num_classes)), num_rows)
    hard = rng.random(num_rows) < HARD_FRACTION
    boost[hard] = rng.normal(0, HARD_BOOST_STD, hard.sum())
    logits = rng.standard_normal((num_rows, num_classes))
    logits[np.arange(num_rows), true_labels] += boost
    logits -= logits.max(axis=1, keepdims=True)
    pred_probs = np.exp(logits)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    return {"labels": labels, "true_labels": true_labels.astype(np.int64),
            "pred_probs": pred_probs.astype(dtype)}


def make_noisy_dataset(num_rows, num_classes, *, noise_rate=0.2, seed=0, dtype=np.float32,
                       class_imbalance=0.0):
    """A synthetic noisy dataset in memory.

    Parameters
    ----------
    num_rows : int
        N.
    num_classes : int
        K, at least 2.
    noise_rate : float
        Probability that a given label is wrong.
    seed : int
    dtype : numpy.dtype
        float16, float32 or float64 for ``pred_probs``.
    class_imbalance : float
        See :func:`noise_model`.

    Returns
    -------
    dict
        ``labels`` (N,) int64 given (noisy) labels, ``true_labels`` (N,) int64,
        ``pred_probs`` (N, K) of ``dtype``, ``noise_matrix`` (K, K)
        ``P(given=i | true=j)``.
    """
    prior, noise_matrix = noise_model(num_classes, noise_rate=noise_rate,
                                      class_imbalance=class_imbalance, seed=seed)
    examples = sample_examples(np.random.default_rng([seed, 0]), num_rows, prior, noise_matrix,
                               dtype)
    return {**examples, "noise_matrix": noise_matrix}


def write_demo_dataset(out_dir, num_rows=200_000, num_classes=10, *, seed=0, rows_per_file=50_000,
                       row_group_rows=None, noise_rate=0.2, dtype=np.float32, class_imbalance=0.0,
                       class_names=None, storage_options=None, overwrite=False):
    """Write a synthetic noisy dataset as a parquet set, one file at a time.

    Parameters
    ----------
    out_dir : str
        Output directory, local path or fsspec URL; receives ``part-00000.parquet``, ...
    num_rows : int
        N.
    num_classes : int
        K, at least 2.
    seed : int
    rows_per_file : int
        Rows per file (the last file may hold fewer).
    row_group_rows : int, optional
        Most rows per row group; pyarrow's default when None.
    noise_rate, dtype, class_imbalance
        As in :func:`make_noisy_dataset`.
    class_names : sequence of str, optional
        K names stored in the files' metadata.
    storage_options : dict, optional
    overwrite : bool
        Replace parts already in ``out_dir``.

    Returns
    -------
    dict
        ``paths`` (URLs of the files in row order), ``num_rows``, ``num_classes``,
        ``noise_matrix`` (K, K) numpy array. Each file holds the columns
        ``label``, ``pred_probs`` and ``true_label`` (to score found issues).
    """
    prior, noise_matrix = noise_model(num_classes, noise_rate=noise_rate,
                                      class_imbalance=class_imbalance, seed=seed)
    writer = PartSetWriter(out_dir, storage_options=storage_options, overwrite=overwrite)
    for file_index, start in enumerate(range(0, num_rows, rows_per_file)):
        rng = np.random.default_rng([seed, file_index])
        examples = sample_examples(rng, min(rows_per_file, num_rows - start), prior,
                                   noise_matrix, dtype)
        table = prediction_table(examples["labels"], examples["pred_probs"],
                                 columns={"true_label": examples["true_labels"]},
                                 class_names=class_names)
        writer.write([table], row_group_rows)
    return {"paths": writer.urls, "num_rows": num_rows, "num_classes": num_classes,
            "noise_matrix": noise_matrix}
