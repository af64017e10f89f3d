"""Noise statistics from the calibrated confident joint (cleanlab's ``estimate_joint`` /
``estimate_latent`` with ``py_method='cnt'`` and no convergence), all O(K²) on the driver."""

from __future__ import annotations

import numpy as np

from labelscan.stats.calibration import TINY_VALUE

PY_LOWER_BOUND = 1e-6
"""Smallest prior probability of a true class after clipping."""

MAX_NOISE_RATE = 0.9999
"""Largest off-diagonal noise rate after clipping."""


def estimate_joint(calibrated_joint: np.ndarray) -> np.ndarray:
    """Joint distribution ``p(given=i, true=j)``.

    Parameters
    ----------
    calibrated_joint : numpy.ndarray, shape (K, K), int64

    Returns
    -------
    numpy.ndarray, shape (K, K), float64, summing to 1
    """
    return calibrated_joint / np.clip(float(np.sum(calibrated_joint)), a_min=TINY_VALUE, a_max=None)


def clip_noise_rates(noise_matrix: np.ndarray) -> np.ndarray:
    """Clip off-diagonal rates to ``[0, 0.9999]``, keep the diagonal, renormalise columns.

    Parameters
    ----------
    noise_matrix : numpy.ndarray, shape (K, K), float64
        Overwritten: the result is computed in its memory.

    Returns
    -------
    numpy.ndarray, shape (K, K), columns summing to 1 (``noise_matrix`` itself)
    """
    diagonal = np.diagonal(noise_matrix).copy()
    clipped = np.clip(noise_matrix, 0, MAX_NOISE_RATE, out=noise_matrix)
    np.fill_diagonal(clipped, diagonal)
    clipped /= np.clip(clipped.sum(axis=0), a_min=TINY_VALUE, a_max=None)
    return clipped


def clip_prior(prior: np.ndarray) -> np.ndarray:
    """Clip a class prior to ``[1e-6, 1]`` and rescale it to sum to 1.

    Parameters
    ----------
    prior : numpy.ndarray, shape (K,)

    Returns
    -------
    numpy.ndarray, shape (K,)
    """
    clipped = np.clip(prior, PY_LOWER_BOUND, 1.0)
    return clipped * 1.0 / np.clip(np.sum(clipped), a_min=TINY_VALUE, a_max=None)


def estimate_latent(calibrated_joint: np.ndarray, label_counts: np.ndarray):
    """Noise matrix, inverse noise matrix and true-class prior.

    Parameters
    ----------
    calibrated_joint : numpy.ndarray, shape (K, K), int64
        ``[given, true]`` calibrated confident joint.
    label_counts : numpy.ndarray, shape (K,), int64
        Rows per given label.

    Returns
    -------
    py : numpy.ndarray, shape (K,)
        ``p(true=j)``.
    noise_matrix : numpy.ndarray, shape (K, K)
        ``p(given=i | true=j)``, columns sum to 1.
    inverse_noise_matrix : numpy.ndarray, shape (K, K)
        ``p(true=j | given=i)`` stored ``[true, given]``, columns sum to 1.
    """
    given_prior = label_counts / float(np.sum(label_counts))
    given_totals = calibrated_joint.sum(axis=1).astype(float)
    true_totals = calibrated_joint.sum(axis=0).astype(float)
    noise_matrix = calibrated_joint / np.clip(true_totals, a_min=TINY_VALUE, a_max=None)
    inverse_noise_matrix = calibrated_joint.T / np.clip(given_totals, a_min=TINY_VALUE, a_max=None)
    py = (
        inverse_noise_matrix.diagonal()
        / np.clip(noise_matrix.diagonal(), a_min=TINY_VALUE, a_max=None)
        * given_prior
    )   # before the matrices are clipped in place
    return clip_prior(py), clip_noise_rates(noise_matrix), clip_noise_rates(inverse_noise_matrix)
