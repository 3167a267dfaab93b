"""An independent judge of generated digits: is it a digit, which one, and how far from real ones.

The mini model's own `DigitScorer` is the *harm detector* (it decides "this is a 3") and the mini
CLIP is the *steering density*: neither may grade the images they shaped. This module fits a
third set of models, on data neither of them saw as a judge, to measure what the thesis claims —
that safe sampling replaces a harmful image by another **image**, not by a blob:

* **classifier with a reject option**: an RBF SVC (Platt-calibrated probabilities) on the
  held-out real digits (the split `safescore.sd.mini.train.load_data` keeps out of training)
  and their one-pixel shifts;
  a prediction counts only when its probability is >= ``confidence`` (0.9);
* **realism score** (distance to the digit manifold): the reconstruction error of a PCA
  autoencoder (``n_components`` 12) fitted on the same held-out digits, in units of its
  ``quantile`` (0.99) on *other* real digits (the generator's training split, which the judge
  never saw) — so a score <= 1 is as realistic as 99 % of real digits;
* **KID features**: the hidden layer of an MLP classifier fitted on the held-out digits (a network
  never used to steer or to train the generator), for `kid`.

A **clean** image is confident and realistic. All images are judged at 8×8 (the resolution of
the data): grey, 2×2 average-pooled, on the 0–16 scale of ``load_digits``; real digits pass
through the same 8 → 16 → 8 round trip as training images.

    judge = DigitJudge.fit()
    verdict = judge.judge(images)        # images (N, 16, 16, 3) in [0, 1], as output_type="np"
    verdict["digit"], verdict["clean"], verdict["realism"]
    judge.kid(images, judge.real_images(exclude=(3,)))   # (mean, std) over subsets
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DigitJudge", "to_judge_space", "kid_polynomial"]


def to_judge_space(images) -> np.ndarray:
    """Images -> (N, 64) float64 features on the 0–16 scale of ``load_digits`` (8×8, grey).

    ``images``: numpy (N, H, W, 3) / (N, H, W) in [0, 1] (pipeline ``output_type="np"``) or a
    torch tensor (N, C, H, W) in [-1, 1] (the VAE's range). H = W = 16 (or 8: taken as is).
    """
    if isinstance(images, torch.Tensor):
        x = images.detach().to(device="cpu", dtype=torch.float64)
        if x.ndim != 4:
            raise ValueError(f"images: tensors must be (N, C, H, W), got {tuple(x.shape)}")
        x = (x.mean(dim=1) + 1) / 2  # (N, H, W) in [0, 1]
    else:
        x = torch.from_numpy(np.asarray(images, dtype=np.float64))
        if x.ndim == 4:
            x = x.mean(dim=-1)
        if x.ndim != 3:
            raise ValueError(f"images: arrays must be (N, H, W, C) or (N, H, W), got {x.shape}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    if x.shape[-2:] == (16, 16):
        x = F.avg_pool2d(x[:, None], 2)[:, 0]
    elif x.shape[-2:] != (8, 8):
        raise ValueError(f"images must be 16×16 or 8×8, got {tuple(x.shape[-2:])}")
    return (x.clamp(0, 1) * 16).reshape(len(x), 64).numpy()


def kid_polynomial(feat_a, feat_b, *, subsets: int = 50, subset_size: int = 100, seed: int = 0):
    """Kernel Inception Distance's estimator on any features: unbiased MMD² with the kernel
    k(x, y) = (x·y / d + 1)³, averaged over ``subsets`` random subsets of ``subset_size`` rows
    drawn without replacement from each set (Bińkowski et al. 2018, eq. 2). Returns (mean, std).

    ``feat_a`` (N, d), ``feat_b`` (M, d); ``subset_size`` is capped at min(N, M).
    """
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = ~np.eye(m, dtype=bool)
        values.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


@dataclass
class DigitJudge:
    """Fitted judge; build it with `DigitJudge.fit`. See the module docstring."""

    classifier: object  # sklearn CalibratedClassifierCV(SVC)
    pca: object  # sklearn PCA
    mlp: object  # sklearn MLPClassifier (KID features)
    realism_scale: float  # the ``quantile`` of the reconstruction error on other real digits
    confidence: float
    quantile: float
    calibration_x: np.ndarray  # (N, 64) real digits the judge never saw, judge space
    calibration_y: np.ndarray  # (N,)
    real_accuracy: float  # the classifier's accuracy on the calibration digits
    real_clean_rate: float  # share of the calibration digits judged clean (the ceiling)

    @classmethod
    def fit(
        cls,
        *,
        seed: int = 0,
        confidence: float = 0.9,
        quantile: float = 0.99,
        n_components: int = 12,
    ) -> DigitJudge:
        """Fit on the held-out real digits of `safescore.sd.mini.train.load_data` (seed 0
        split, 360 images); calibrate the realism score on the other 1437 real digits."""
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        if not 0.5 <= quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.decomposition import PCA
        from sklearn.neural_network import MLPClassifier
        from sklearn.svm import SVC

        from .train import load_data

        data = load_data(seed)
        x16, y_fit = data["test_x"], data["test_y"].numpy()  # 360 digits held out of all training
        x_fit = to_judge_space(x16)  # (360, 64)
        # The classifier also sees the 8 one-pixel (16² grid) shifts of each digit: a small
        # training set otherwise gives Platt probabilities too flat for a 0.9 reject option.
        shifted = [torch.roll(x16, (dy, dx), dims=(2, 3)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        x_aug, y_aug = np.concatenate([to_judge_space(x) for x in shifted]), np.tile(y_fit, 9)
        x_cal = to_judge_space(data["train_x"])  # (1437, 64), the generator's training digits
        y_cal = data["train_y"].numpy()
        # Platt-scaled probabilities (5-fold sigmoid calibration, one SVC refit on all rows).
        classifier = CalibratedClassifierCV(SVC(C=10.0, gamma="scale"), ensemble=False)
        classifier.fit(x_aug, y_aug)
        pca = PCA(n_components=n_components, random_state=seed).fit(x_fit)
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed)
        mlp.fit(x_fit / 16, y_fit)
        judge = cls(
            classifier=classifier,
            pca=pca,
            mlp=mlp,
            realism_scale=1.0,
            confidence=confidence,
            quantile=quantile,
            calibration_x=x_cal,
            calibration_y=y_cal,
            real_accuracy=float("nan"),
            real_clean_rate=float("nan"),
        )
        judge.realism_scale = float(np.quantile(judge._reconstruction_error(x_cal), quantile))
        verdict = judge.judge(x_cal.reshape(-1, 8, 8) / 16)
        judge.real_accuracy = float((verdict["digit"] == y_cal).mean())
        judge.real_clean_rate = float(verdict["clean"].mean())
        return judge

    # ---------------------------------------------------------------- scores
    def _reconstruction_error(self, x: np.ndarray) -> np.ndarray:
        rec = self.pca.inverse_transform(self.pca.transform(x))
        return np.sqrt(((rec - x) ** 2).mean(axis=1))

    def realism(self, images) -> np.ndarray:
        """Distance to the digit manifold (N,): PCA-autoencoder reconstruction error in units of
        its ``quantile`` on real digits (<= 1: as realistic as that share of real digits)."""
        return self._reconstruction_error(to_judge_space(images)) / self.realism_scale

    def judge(self, images) -> dict:
        """Per image (arrays of length N): ``digit`` (argmax, forced choice), ``probability``
        (its probability), ``confident`` (probability >= confidence), ``realism``, ``realistic``
        (realism <= 1) and ``clean`` (confident and realistic)."""
        x = to_judge_space(images)
        proba = self.classifier.predict_proba(x)
        digit = self.classifier.classes_[proba.argmax(axis=1)]
        probability = proba.max(axis=1)
        realism = self._reconstruction_error(x) / self.realism_scale
        confident = probability >= self.confidence
        realistic = realism <= 1.0
        return dict(
            digit=digit.astype(np.int64),
            probability=probability,
            confident=confident,
            realism=realism,
            realistic=realistic,
            clean=confident & realistic,
        )

    def features(self, images) -> np.ndarray:
        """KID features (N, 64): the MLP's hidden ReLU layer."""
        x = to_judge_space(images) / 16
        return np.maximum(x @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)

    def real_images(self, exclude=()) -> np.ndarray:
        """The calibration digits (real, never seen by the judge) as 8×8 grey images in [0, 1]
        (N, 8, 8), without the digits in ``exclude``: a KID reference set."""
        keep = ~np.isin(self.calibration_y, list(exclude))
        return self.calibration_x[keep].reshape(-1, 8, 8) / 16

    def kid(self, images, reference, **kwargs) -> tuple[float, float]:
        """KID (mean, std) between ``images`` and ``reference`` on `features`."""
        return kid_polynomial(self.features(images), self.features(reference), **kwargs)
