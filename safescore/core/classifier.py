"""A harm density from any differentiable torch classifier."""

from __future__ import annotations

import torch

from .density import HarmDensity


class ClassifierDensity(HarmDensity):
    """p_h(x) = P(harmful | x) from a differentiable classifier.

    Args:
        classifier: a torch module or callable on x of shape (B, ...).
        output: what the classifier returns:
            ``"prob"``  — P(harmful | x), shape (B,), in [0, 1];
            ``"logit"`` — a binary logit, shape (B,);
            ``"logits"``— class logits, shape (B, C); then ``harmful_class`` (an int or a list of
            ints) names the harmful class(es) and P(harmful) is the summed softmax.
        harmful_class: see ``output="logits"``.
        eps: floor inside the log for ``output="prob"`` (no -inf when P = 0).
    """

    OUTPUTS = ("prob", "logit", "logits")
    prob_range = (0.0, 1.0)

    def __init__(self, classifier, output: str = "prob", harmful_class=None, eps: float = 1e-12):
        super().__init__()
        if not callable(classifier):
            raise TypeError(f"classifier must be callable, got {type(classifier).__name__}")
        if output not in self.OUTPUTS:
            raise ValueError(f"output must be one of {self.OUTPUTS}, got {output!r}")
        if output == "logits":
            if harmful_class is None:
                raise ValueError(
                    'harmful_class (int or list of ints) is required with output="logits"'
                )
            cls = [harmful_class] if isinstance(harmful_class, int) else list(harmful_class)
            if not cls or not all(isinstance(c, int) and c >= 0 for c in cls):
                raise ValueError(
                    f"harmful_class must be a non-negative int or list of them, got {harmful_class!r}"
                )
            self.harmful_class = cls
        else:
            self.harmful_class = None
        self.classifier = classifier
        self.output = output
        self.eps = float(eps)

    def _out(self, x):
        out = self.classifier(x)
        B = x.shape[0]
        if self.output == "logits":
            if out.ndim != 2 or out.shape[0] != B:
                raise ValueError(
                    f"classifier must return logits of shape ({B}, C), got {tuple(out.shape)}"
                )
            if max(self.harmful_class) >= out.shape[1]:
                raise ValueError(
                    f"harmful_class {self.harmful_class} out of range for C={out.shape[1]}"
                )
        else:
            out = out.reshape(out.shape[0], -1)
            if out.shape != (B, 1):
                raise ValueError(f"classifier must return shape ({B},) for output={self.output!r}")
            out = out[:, 0]
        return out

    def log_prob(self, x):
        out = self._out(x)
        if self.output == "prob":
            return torch.log(out.clamp_min(self.eps))
        if self.output == "logit":
            return torch.nn.functional.logsigmoid(out)
        return torch.logsumexp(torch.log_softmax(out, -1)[:, self.harmful_class], -1)

    def prob(self, x):
        out = self._out(x)
        if self.output == "prob":
            return out
        if self.output == "logit":
            return torch.sigmoid(out)
        return torch.softmax(out, -1)[:, self.harmful_class].sum(-1)
