"""A small image problem: scikit-learn's 8×8 digits (shipped with scikit-learn, no download).

Pieces for safe sampling on images, all trainable on a CPU in seconds:

* `load_digits_data` — the 1797 images as vectors of 64 pixels scaled to [-1, 1];
* `PCAAutoencoder` — a linear autoencoder (PCA), the latent space of "latent diffusion"
  and the manifold of the MPGD argument;
* `DigitClassifier` / `train_digit_classifier` — an MLP classifier, whose softmax
  probability of one digit is the harm density (`digit_harm_density`);
* `train_digit_eps_model` — an MLP ε-model trained by denoising score matching, in pixel
  space or on PCA codes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.classifier import ClassifierDensity
from ..core.density import HarmDensity
from ..core.schedules import NoiseSchedule
from .nets import ScoreMLP
from .training import train_dsm

IMAGE_SHAPE = (8, 8)
NUM_CLASSES = 10


def load_digits_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: images (1797, 64) with pixels in [-1, 1], labels (1797,) int64.

    Pixel values 0..16 are mapped to x = v / 8 - 1. Reshape to (N, 8, 8) to view them.
    """
    from sklearn.datasets import load_digits

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float64) / 8.0 - 1.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return x.to(dtype), y


class PCAAutoencoder(nn.Module):
    """Linear autoencoder from PCA: z = ((x - m) U) / s, x = m + (z s) Uᵀ.

    Args:
        mean: data mean m, shape (d,).
        basis: orthonormal principal directions U, shape (d, k).
        scale: per-code scale s, shape (k,) (the codes' std when whitened, else ones).
    Shapes: encode (B, d) -> (B, k), decode (B, k) -> (B, d). Decoded points lie exactly on the
    affine subspace m + span(U); ``decode(encode(x))`` is the orthogonal projection onto it.
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if basis.ndim != 2 or mean.shape != (basis.shape[0],) or scale.shape != (basis.shape[1],):
            raise ValueError(
                "mean (d,), basis (d, k) and scale (k,) must agree, got "
                f"{tuple(mean.shape)}, {tuple(basis.shape)}, {tuple(scale.shape)}"
            )
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)
        self.register_buffer("scale", scale)

    @classmethod
    def fit(cls, data: torch.Tensor, k: int, *, whiten: bool = True) -> PCAAutoencoder:
        """PCA of ``data`` (N, d) keeping ``k`` components; ``whiten`` scales codes to unit std."""
        if not isinstance(data, torch.Tensor) or data.ndim != 2:
            raise ValueError("data must be a tensor of shape (N, d)")
        d = data.shape[1]
        if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= d):
            raise ValueError(f"k must be an integer in [1, {d}], got {k!r}")
        x = data.to(torch.float64)
        mean = x.mean(0)
        _, svals, vh = torch.linalg.svd(x - mean, full_matrices=False)
        basis = vh[:k].T.contiguous()
        if whiten:
            scale = svals[:k] / (x.shape[0] - 1) ** 0.5
        else:
            scale = torch.ones(k, dtype=torch.float64)
        dt = data.dtype
        return cls(mean.to(dt), basis.to(dt), scale.to(dt))

    @property
    def latent_dim(self) -> int:
        return self.basis.shape[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean.to(x.dtype)) @ self.basis.to(x.dtype)) / self.scale.to(x.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean.to(z.dtype) + (z * self.scale.to(z.dtype)) @ self.basis.to(z.dtype).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class DigitClassifier(nn.Module):
    """MLP classifier on flattened 8×8 images: (B, 64) -> logits (B, 10)."""

    def __init__(self, dim: int = 64, hidden: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_digit_classifier(
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    noise_std: float = 0.1,
    seed: int = 0,
) -> DigitClassifier:
    """Train a `DigitClassifier` by full-batch Adam on cross-entropy.

    Args:
        x: images (N, 64) in [-1, 1]; labels: (N,) int64 in 0..9.
        steps, lr: optimisation settings.
        noise_std: std of Gaussian noise added to the inputs at each step (a smoother
            classifier, whose gradient is informative on the blurry x̂0 of early steps).
        seed: seeds the initialisation and the noise.
    Returns:
        the classifier in eval mode.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError("x must be a tensor of shape (N, d)")
    if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({x.shape[0]},)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        model = DigitClassifier(dim=x.shape[1]).to(x.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        noisy = x + noise_std * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        loss = nn.functional.cross_entropy(model(noisy), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


class LogOddsClassifierDensity(HarmDensity):
    """p_h(x) = softmax(classifier(x))[c] for a harmful class c, differentiated as log-odds.

    ``prob`` is P(c | x) in [0, 1] (what a CDTC threshold compares). ``log_prob`` is the
    log-odds log P(c|x) - log(1 - P(c|x)) = logit_c - logsumexp_{j≠c} logit_j: unlike
    log P(c | x), whose gradient (1 - P) ∇logit vanishes where the classifier is sure, its
    gradient stays informative deep inside the harmful class.

    Shapes: x (B, ...) -> classifier logits (B, C) -> (B,).
    """

    def __init__(self, classifier, harmful_class: int):
        super().__init__()
        if not callable(classifier):
            raise TypeError(f"classifier must be callable, got {type(classifier).__name__}")
        if (
            isinstance(harmful_class, bool)
            or not isinstance(harmful_class, int)
            or harmful_class < 0
        ):
            raise ValueError(f"harmful_class must be a non-negative int, got {harmful_class!r}")
        self.classifier = classifier
        self.harmful_class = harmful_class

    def _logits(self, x):
        logits = self.classifier(x)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(
                f"classifier must return logits of shape ({x.shape[0]}, C), got {tuple(logits.shape)}"
            )
        if self.harmful_class >= logits.shape[1]:
            raise ValueError(
                f"harmful_class {self.harmful_class} out of range for C={logits.shape[1]}"
            )
        return logits

    def prob(self, x):
        return torch.softmax(self._logits(x), -1)[:, self.harmful_class]

    def log_prob(self, x):
        logits = self._logits(x)
        c = self.harmful_class
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=-1)
        return logits[:, c] - torch.logsumexp(others, dim=-1)


HARM_GRADIENTS = ("log_odds", "log_prob")


def digit_harm_density(classifier: nn.Module, harmful_digit: int, gradient: str = "log_odds"):
    """Harm density "this image shows ``harmful_digit``" from a digit classifier.

    ``prob`` is the classifier's softmax probability of the digit. What guidance differentiates
    is chosen by ``gradient``: ``"log_odds"`` (default, `LogOddsClassifierDensity`) or
    ``"log_prob"`` (log-softmax, `safescore.densities.ClassifierDensity`), whose gradient
    vanishes on images the classifier is sure of.
    """
    if isinstance(harmful_digit, bool) or not isinstance(harmful_digit, int):
        raise TypeError(f"harmful_digit must be an int in 0..9, got {harmful_digit!r}")
    if not 0 <= harmful_digit < NUM_CLASSES:
        raise ValueError(f"harmful_digit must be in 0..9, got {harmful_digit}")
    if gradient not in HARM_GRADIENTS:
        raise ValueError(f"gradient must be one of {HARM_GRADIENTS}, got {gradient!r}")
    if gradient == "log_odds":
        return LogOddsClassifierDensity(classifier, harmful_digit)
    return ClassifierDensity(classifier, output="logits", harmful_class=harmful_digit)


def predict_digits(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's digit for each image, (B, 64) -> (B,) int64."""
    with torch.no_grad():
        return classifier(x).argmax(-1)


def train_digit_eps_model(
    data: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 2000,
    hidden: int = 256,
    num_layers: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[ScoreMLP, list[float]]:
    """Train a `safescore.nets.ScoreMLP` ε-model on vectors ``data`` (N, d) — pixels
    (d = 64) or PCA codes — by denoising score matching. Returns (model, losses)."""
    if not isinstance(data, torch.Tensor) or data.ndim != 2:
        raise ValueError("data must be a tensor of shape (N, d)")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        model = ScoreMLP(data.shape[1], hidden=hidden, num_layers=num_layers).to(data.dtype)
    losses = train_dsm(
        model, data, schedule, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=False
    )
    return model, losses
