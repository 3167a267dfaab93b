"""Train the mini Stable Diffusion on scikit-learn's digits, deterministically, on a CPU.

    python -m safescore.sd.mini.train --out DIR [--seed 0] [--quick]

Four stages, each with a tqdm bar and a wall-time cap (a capped stage stops early and says so in
the model card, which then makes the run depend on the machine's speed):

1. a tiny ``CLIPModel`` (text and vision towers) trained contrastively on (digit image, caption);
2. an ``AutoencoderKL`` (16² RGB images -> 8×8×4 latents, factor 2);
3. a ``UNet2DConditionModel`` with cross-attention on the hidden states of the mini CLIP's text
   tower (frozen, saved as the pipeline's ``CLIPTextModel``), ε-prediction on Stable Diffusion's
   scaled-linear schedule, 10 % empty prompts for classifier-free guidance;
4. a small CNN digit classifier on real digits (the scorer of generated images).

Writes a folder loadable by diffusers' ``StableDiffusionPipeline.from_pretrained`` (model_index.json,
safetensors), plus ``clip/`` (CLIPModel + CLIPProcessor), ``classifier/`` (safetensors + json) and
``MODEL_CARD.md``. Nothing is pickled.

Data: the 1797 8×8 digits, bilinearly upsampled to 16×16, in [-1, 1], the grey value replicated to
3 channels (the pipeline, its image processor and CLIP preprocessing all expect RGB; replicating
costs only the first and last convolutions); 20 % held out (stratified, seeded); augmentation by
random shifts of up to 1 pixel and ±10 % contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..tiny import _bytes_to_unicode, ddim_scheduler  # byte-level table; SD's DDIM

# ---- other safescore modules used here (the only ones) -------------------------------------
# (none: this file depends on diffusers, transformers, scikit-learn and torch only)
# --------------------------------------------------------------------------------------------

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 16
MAX_LENGTH = 16  # tokenizer / text-encoder context length (prompts here are <= 8 words)
TEXT_HIDDEN = 64
CFG_DROPOUT = 0.1

# Caption templates: {w} is the digit's word, {d} its numeral.
TEMPLATES = (
    "a handwritten {w}",
    "the digit {d}",
    "the digit {w}",
    "a handwritten {d}",
    "the number {w}",
    "a {w}",
    "{w}",
    "{d}",
    "a picture of a handwritten {w}",
    "a handwritten digit {w}",
)
STYLE_TEMPLATES = ("a {s} handwritten {w}", "a {s} {w}", "{w} written in {s}")
NEXT_TEMPLATES = ("the number after {p}", "the digit after {p}")  # d >= 1, p = word of d - 1
PREV_TEMPLATES = ("the number before {n}",)  # d <= 8, n = word of d + 1
STYLES = ("bold", "thin", "slanted")
EXTRA_WORDS = (
    "a", "an", "the", "of", "digit", "number", "handwritten", "picture", "image", "photo",
    "written", "in", "after", "before", "bold", "thin", "slanted", "and", "or", "not", "with",
    "drawn", "by", "hand", "small", "large", "big", "black", "white", "safe",
)  # fmt: skip


# ============================================================================ data
def load_data(seed: int = 0, test_fraction: float = 0.2):
    """Digits upsampled to 16², the split and per-image style words.

    Returns a dict: ``train_x`` (N, 1, 16, 16) float32 in [-1, 1], ``train_y`` (N,) int64,
    ``test_x``, ``test_y``, ``train_styles`` (list of tuples of style words).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x8 = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y.numpy())
    tr, te = np.sort(tr), np.sort(te)
    x16 = F.interpolate(x8[:, None], size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    x16 = (x16 * 2 - 1).clamp(-1, 1)
    styles = measure_styles(x8, y)
    return dict(
        train_x=x16[tr],
        train_y=y[tr],
        test_x=x16[te],
        test_y=y[te],
        train_styles=[styles[i] for i in tr],
    )


def _every_kth(data: dict, k: int) -> dict:
    """Every ``k``-th training and held-out image of ``load_data``'s dict (``--quick``)."""
    return {key: value[::k] for key, value in data.items()}  # tensors and the styles list


def measure_styles(x8: torch.Tensor, y: torch.Tensor) -> list[tuple[str, ...]]:
    """Style words from the image: "bold"/"thin" (ink mass in the top/bottom 30 % of its digit),
    "slanted" (|shear moment| in the top 30 % of its digit). ``x8`` (N, 8, 8) in [0, 1]."""
    n = len(y)
    ink = x8.sum(dim=(1, 2))
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    mass = x8.sum(dim=(1, 2)).clamp(min=1e-6)
    mr = (x8 * rows).sum(dim=(1, 2)) / mass
    mc = (x8 * cols).sum(dim=(1, 2)) / mass
    r, c = rows - mr[:, None, None], cols - mc[:, None, None]
    shear = ((x8 * r * c).sum(dim=(1, 2)) / (x8 * r * r).sum(dim=(1, 2)).clamp(min=1e-6)).abs()
    out: list[list[str]] = [[] for _ in range(n)]
    for d in range(10):
        m = (y == d).nonzero().flatten()
        lo, hi = torch.quantile(ink[m], 0.3), torch.quantile(ink[m], 0.7)
        sh = torch.quantile(shear[m], 0.7)
        for i in m.tolist():
            if ink[i] >= hi:
                out[i].append("bold")
            elif ink[i] <= lo:
                out[i].append("thin")
            if shear[i] >= sh:
                out[i].append("slanted")
    return [tuple(s) for s in out]


def caption_set() -> tuple[list[str], list[int], list[str | None]]:
    """Every caption: (texts, digit of each, style word of each or None)."""
    texts, labels, styles = [], [], []
    for d, w in enumerate(WORDS):
        for t in TEMPLATES:
            texts.append(t.format(w=w, d=d))
            labels.append(d)
            styles.append(None)
        if d >= 1:
            for t in NEXT_TEMPLATES:
                texts.append(t.format(p=WORDS[d - 1]))
                labels.append(d)
                styles.append(None)
        if d <= 8:
            for t in PREV_TEMPLATES:
                texts.append(t.format(n=WORDS[d + 1]))
                labels.append(d)
                styles.append(None)
        for s in STYLES:
            for t in STYLE_TEMPLATES:
                texts.append(t.format(s=s, w=w))
                labels.append(d)
                styles.append(s)
    return texts, labels, styles


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift by up to 1 pixel (replicate-free: pad with -1) and ±10 % contrast.

    x: (B, C, H, W) in [-1, 1] -> same shape.
    """
    B, _, H, W = x.shape
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy = torch.randint(0, 3, (B,), generator=generator)
    dx = torch.randint(0, 3, (B,), generator=generator)
    out = torch.stack([pad[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])
    gain = 1 + 0.1 * (2 * torch.rand(B, 1, 1, 1, generator=generator) - 1)
    return ((out + 1) * gain - 1).clamp(-1, 1)


def sample_captions(labels, styles, texts_by_key, generator):
    """One caption id per image: a random caption of its digit, a style caption when the image
    has that style. ``texts_by_key[(d, style)]`` lists caption ids."""
    ids = []
    r = torch.rand(len(labels), generator=generator).tolist()
    j = torch.randint(0, 1 << 30, (len(labels),), generator=generator).tolist()
    for d, st, u, k in zip(labels, styles, r, j):
        pool = texts_by_key[(d, None)]
        if st and u < 0.3:
            s = st[k % len(st)]
            pool = texts_by_key[(d, s)]
        ids.append(pool[k % len(pool)])
    return ids


# ============================================================================ tokenizer
def _bpe_tokenizer(words):
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    merges: list[tuple[str, str]] = []
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        acc = parts[0]
        for p in parts[1:]:
            merges.append((acc, p))
            acc = acc + p
    merges = list(dict.fromkeys(merges))
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


def build_tokenizer():
    """A ``CLIPTokenizer`` on our own small vocabulary, ``model_max_length`` 16.

    Byte-level BPE (every string tokenizes, unknown words fall back to characters) whose merges
    build every caption word (and a few more) into one token: "a handwritten three" is
    ``<|startoftext|> a handwritten three <|endoftext|>``.
    """
    words = sorted(set(WORDS) | set(EXTRA_WORDS) | {str(d) for d in range(10)})
    words.sort(key=len, reverse=True)  # long words first: their merges outrank short ones
    for _ in range(10):  # a word split by another word's earlier merge moves to the front
        tokenizer = _bpe_tokenizer(words)
        split = [w for w in words if len(tokenizer.tokenize(w)) > 1]
        if not split:
            return tokenizer
        words = split + [w for w in words if w not in split]
    raise RuntimeError(f"could not make every word one token: {split}")


# ============================================================================ models
def clip_config(tokenizer):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def clip_processor(tokenizer):
    """CLIPProcessor whose preprocessing maps [-1, 1] images to themselves (mean = std = 0.5)."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(48, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=16,
    )


class DigitClassifier(nn.Module):
    """A small CNN: grey 16×16 digits in [-1, 1] (B, 1, 16, 16) -> logits (B, 10)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(2 * width, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ============================================================================ helpers
class _Stage:
    """A tqdm bar over ``steps`` steps that stops early past ``budget_s`` seconds.

    With ``log["_stop_at"][name]`` set (``--reproduce``) it stops at that step instead, whatever
    the time: the learning-rate schedule still spans ``steps``, so a run stopped by its budget is
    repeated exactly.
    """

    def __init__(self, name: str, steps: int, budget_s: float | None, log: dict):
        self.name, self.steps, self.budget_s, self.log = name, steps, budget_s, log
        self.stop_at = log.get("_stop_at", {}).get(name)
        self.t0 = time.perf_counter()

    def __iter__(self):
        bar = tqdm(range(self.steps), desc=self.name, mininterval=2.0)
        done = 0
        for step in bar:
            if self.stop_at is not None:
                if step >= self.stop_at:
                    bar.write(f"{self.name}: stopped at step {step}, as the run reproduced")
                    break
            elif self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s:
                bar.write(f"{self.name}: time budget {self.budget_s:.0f} s reached at step {step}")
                break
            yield step, bar
            done = step + 1
        bar.close()
        self.log[self.name] = dict(
            steps=done, planned=self.steps, seconds=round(time.perf_counter() - self.t0, 1)
        )


def _lr(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))


def _set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def _tokenize(tokenizer, texts):
    return tokenizer(
        list(texts),
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    )


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.astype(int), scores))


# ============================================================================ stages
def train_clip(data, tokenizer, steps, budget_s, seed, log):
    """InfoNCE with multi-positive targets (every caption of the image's digit is a positive)."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(clip_config(tokenizer))
    texts, cap_labels, cap_styles = caption_set()
    keys: dict = {}
    for i, (d, s) in enumerate(zip(cap_labels, cap_styles)):
        keys.setdefault((d, s), []).append(i)
    tokens = _tokenize(tokenizer, texts)
    cap_labels_t = torch.tensor(cap_labels)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    x_all, y_all, st_all = data["train_x"], data["train_y"], data["train_styles"]
    batch = 256
    model.train()
    for step, bar in _Stage("clip", steps, budget_s, log):
        _set_lr(opt, _lr(step, steps, 2e-3))
        idx = torch.randint(0, len(y_all), (batch,), generator=g)
        x = _rgb(augment(x_all[idx], g))
        y = y_all[idx]
        cap = torch.tensor(sample_captions(y.tolist(), [st_all[i] for i in idx], keys, g))
        out = model(
            input_ids=tokens["input_ids"][cap],
            attention_mask=tokens["attention_mask"][cap],
            pixel_values=x,
        )
        logits = out.logits_per_image  # (B images, B captions)
        same = (y[:, None] == cap_labels_t[cap][None, :]).float()
        loss_i = -(same / same.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        same_t = same.T
        loss_t = -(same_t / same_t.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def clip_metrics(model, tokenizer, data) -> dict:
    """Zero-shot accuracy ("a handwritten {word}") and AUROC of cos(x, "a handwritten three")."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    def feats(o):
        return o.pooler_output if isinstance(o, BaseModelOutputWithPooling) else o

    tok = _tokenize(tokenizer, [f"a handwritten {w}" for w in WORDS])
    t = F.normalize(feats(model.get_text_features(**tok)), dim=-1)
    im = F.normalize(feats(model.get_image_features(pixel_values=_rgb(data["test_x"]))), dim=-1)
    sims = im @ t.T
    y = data["test_y"].numpy()
    acc = float((sims.argmax(1).numpy() == y).mean())
    return dict(
        clip_zero_shot_accuracy=acc,
        clip_auroc_three=_auroc(sims[:, 3].numpy(), y == 3),
        clip_cos_three_on_threes=float(sims[y == 3, 3].mean()),
        clip_cos_three_on_others=float(sims[y != 3, 3].mean()),
    )


def train_vae(data, steps, budget_s, seed, log):
    torch.manual_seed(seed)
    vae = make_vae()
    g = torch.Generator().manual_seed(seed + 2)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    x_all = data["train_x"]
    vae.train()
    for step, bar in _Stage("vae", steps, budget_s, log):
        _set_lr(opt, _lr(step, steps, 1e-3))
        idx = torch.randint(0, len(x_all), (64,), generator=g)
        x = _rgb(augment(x_all[idx], g))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 1e-4 * post.kl().mean() / z[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(mse=f"{F.mse_loss(rec, x).item():.4f}")
    vae.eval()
    with torch.no_grad():
        mean = vae.encode(_rgb(x_all)).latent_dist.mean
        scaling = float(1.0 / mean.std())
        rec = vae.decode(vae.encode(_rgb(data["test_x"])).latent_dist.mean).sample
    vae.register_to_config(scaling_factor=round(scaling, 5))
    log["vae_test_mse"] = float(F.mse_loss(rec, _rgb(data["test_x"])))
    log["vae_scaling_factor"] = round(scaling, 5)
    return vae


def train_unet(data, vae, text_encoder, tokenizer, steps, budget_s, seed, log, copies=8):
    """ε-prediction on latents of augmented digits, conditioned on frozen text hidden states."""
    from diffusers import DDPMScheduler

    texts, cap_labels, cap_styles = caption_set()
    keys: dict = {}
    for i, (d, s) in enumerate(zip(cap_labels, cap_styles)):
        keys.setdefault((d, s), []).append(i)
    with torch.no_grad():
        tok = _tokenize(tokenizer, texts + [""])
        hidden = text_encoder(**tok).last_hidden_state  # (n_captions + 1, L, D); last = ""
    empty_id = len(texts)
    g = torch.Generator().manual_seed(seed + 3)
    # Latents of 8 augmented copies of the training set, encoded once (posterior samples).
    x_all, y_all, st_all = data["train_x"], data["train_y"], data["train_styles"]
    lat, lab, sty = [], [], []
    with torch.no_grad():
        for _ in range(copies):
            for s in range(0, len(x_all), 512):
                xb = _rgb(augment(x_all[s : s + 512], g))
                post = vae.encode(xb).latent_dist
                lat.append(post.mean + post.std * torch.randn(post.mean.shape, generator=g))
            lab.append(y_all)
            sty.extend(st_all)
    latents = torch.cat(lat) * vae.config.scaling_factor
    labels = torch.cat(lab)
    noise_sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    torch.manual_seed(seed)
    unet = make_unet()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    batch = 64
    unet.train()
    for step, bar in _Stage("unet", steps, budget_s, log):
        _set_lr(opt, _lr(step, steps, 1e-3, warmup=100))
        idx = torch.randint(0, len(labels), (batch,), generator=g)
        z0 = latents[idx]
        cap = sample_captions(labels[idx].tolist(), [sty[i] for i in idx], keys, g)
        drop = torch.rand(batch, generator=g) < CFG_DROPOUT
        cap = torch.where(drop, torch.tensor(empty_id), torch.tensor(cap))
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        zt = noise_sched.add_noise(z0, noise, t)
        pred = unet(zt, t, encoder_hidden_states=hidden[cap]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v, alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    unet.load_state_dict(ema)
    return unet.eval()


def train_classifier(data, steps, budget_s, seed, log):
    torch.manual_seed(seed)
    model = DigitClassifier()
    g = torch.Generator().manual_seed(seed + 4)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x_all, y_all = data["train_x"], data["train_y"]
    model.train()
    for step, bar in _Stage("classifier", steps, budget_s, log):
        _set_lr(opt, _lr(step, steps, 2e-3))
        idx = torch.randint(0, len(y_all), (128,), generator=g)
        x = augment(x_all[idx], g)
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        acc = float((model(data["test_x"]).argmax(1) == data["test_y"]).float().mean())
    log["classifier_test_accuracy"] = acc
    return model


@torch.no_grad()
def generation_accuracy(pipe, classifier, per_digit=20, steps=25, guidance_scale=3.0, seed=0):
    """Fraction of images from "a handwritten {word}" the classifier reads as that digit.

    Returns (mean accuracy, list of 10 per-digit accuracies)."""
    accs = []
    for d, w in enumerate(WORDS):
        gens = [torch.Generator().manual_seed(seed + i) for i in range(per_digit)]
        img = pipe(
            [f"a handwritten {w}"] * per_digit,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
            output_type="pt",
        ).images  # (N, 3, H, W) in [0, 1]
        x = img.mean(1, keepdim=True) * 2 - 1
        accs.append(float((classifier(x).argmax(1) == d).float().mean()))
    return float(np.mean(accs)), accs


# ============================================================================ saving
def save_all(out: Path, *, clip, tokenizer, vae, unet, classifier, classifier_acc):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    out.mkdir(parents=True, exist_ok=True)
    text_cfg = CLIPTextConfig(**clip.config.text_config.to_dict())
    text_encoder = CLIPTextModel(text_cfg)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    text_encoder.eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    clip.save_pretrained(out / "clip", safe_serialization=True)
    clip_processor(tokenizer).save_pretrained(out / "clip")
    (out / "classifier").mkdir(exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in classifier.state_dict().items()},
        str(out / "classifier" / "model.safetensors"),
    )
    (out / "classifier" / "config.json").write_text(
        json.dumps(
            dict(
                architecture="DigitClassifier",
                width=classifier.width,
                image_size=IMAGE_SIZE,
                input="grey (B, 1, 16, 16) in [-1, 1]; RGB inputs are averaged over channels",
                test_accuracy=classifier_acc,
            ),
            indent=2,
        )
        + "\n"
    )
    return pipe


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_model_card(out: Path, info: dict) -> None:
    m = info["metrics"]
    stages = info["stages"]
    rows = "\n".join(
        f"| {name} | {s['steps']} / {s['planned']} | {s['seconds']:.0f} |"
        for name, s in stages.items()
        if isinstance(s, dict)
    )
    capped = [n for n, s in stages.items() if isinstance(s, dict) and s["steps"] < s["planned"]]
    text = (
        f"""# safescore mini Stable Diffusion (digits)

A text-to-image latent diffusion model made of Stable Diffusion's classes (`AutoencoderKL`,
`UNet2DConditionModel` with cross-attention, `CLIPTextModel` + `CLIPTokenizer`, `DDIMScheduler`)
and a tiny `CLIPModel`, trained from scratch on scikit-learn's digits on a CPU. It exists so that
safe sampling, the CLIP density and the evaluation harness run on real, trained weights without
a GPU or the hub. It draws 16×16 digits; it is not a general image model.

## Data
- `sklearn.datasets.load_digits` (1797 images 8×8, values 0–16), bilinearly upsampled to 16×16,
  scaled to [-1, 1], grey replicated to 3 channels (the pipeline, its image processor and the
  CLIP preprocessing expect RGB; replication only widens the first and last convolutions).
  16×16 rather than 32×32: the 8×8 source has no detail to add, and 16² with an 8×8×4 latent
  trains in about half an hour on 2 CPU cores.
- Split: {info["n_train"]} train / {info["n_test"]} held-out test images (stratified, seed {info["seed"]}).
- Augmentation: random shifts of up to 1 pixel, ±10 % contrast.
- Captions (templates, words zero … nine): `a handwritten {{word}}`, `the digit {{d}}`, `the digit
  {{word}}`, `a handwritten {{d}}`, `the number {{word}}`, `a {{word}}`, `{{word}}`, `{{d}}`,
  `a picture of a handwritten {{word}}`, `a handwritten digit {{word}}`, `the number after
  {{previous}}`, `the digit after {{previous}}`, `the number before {{next}}`, and style captions
  (`a {{style}} handwritten {{word}}`, `a {{style}} {{word}}`, `{{word}} written in {{style}}`) for
  images whose measured style is bold / thin (ink mass in the top / bottom 30 % of their digit) or
  slanted (shear moment in the top 30 %).
- Tokenizer: a `CLIPTokenizer` on our own byte-level BPE vocabulary ({info["vocab_size"]} tokens):
  each caption word is one token, any other text falls back to characters; context length
  {MAX_LENGTH}.

## Models
| part | class | parameters |
|---|---|---|
"""
        + "\n".join(f"| {k} | {v[0]} | {v[1]:,} |" for k, v in info["params"].items())
        + f"""

- CLIP: InfoNCE with multi-positive targets (every caption of an image's digit counts as a
  positive), batch 256, AdamW. Preprocessing constants mean = std = 0.5 (identity on [-1, 1]).
- VAE: MSE + 1e-4 KL, batch 64; latent scaling factor {m.get("vae_scaling_factor")} (1 / std of
  the training latents); held-out reconstruction MSE {m.get("vae_test_mse", float("nan")):.4f}.
- UNet: ε-prediction, Stable Diffusion's scaled-linear β (0.00085–0.012, 1000 steps), batch 64,
  AdamW 1e-3 cosine, EMA 0.995, {int(CFG_DROPOUT * 100)} % empty prompts (classifier-free
  guidance); text encoder = the mini CLIP's text tower, frozen.
- Digit classifier: a 3-layer CNN on grey 16×16 digits, held-out accuracy
  {m["classifier_test_accuracy"]:.3f}.

## Training
- Command: `{info["command"]}`
- Seed {info["seed"]}; torch {info["torch"]}, diffusers {info["diffusers"]}, transformers
  {info["transformers"]}, numpy {info.get("numpy", "?")}, Python {info.get("python", "?")};
  {info["threads"]} torch thread(s) on {info["machine"]} ({info.get("cpu", "CPU not recorded")},
  kernel {info.get("kernel", "?")}, torch CPU capability {info.get("torch_cpu_capability", "?")});
  load average at the start {info["load_start"]}, at the end {info["load_end"]}.
- Wall time {info["seconds"]:.0f} s in all:

| stage | steps done / planned | seconds |
|---|---|---|
{rows}

{"Stages stopped by their time budget: " + ", ".join(capped) + " (the weights then depend on the machine speed)." if capped else "Every stage ran its planned step count (no clock). What is guaranteed: the same command on the same CPU model, kernel, thread count and library versions rebuilds these files byte for byte (checked). On another CPU the float kernels differ in the last bits and the weights drift (seen: max 7e-3 per weight); the measured quality is the same within noise, not the bytes."}

## Quality (measured at the end of training)
| metric | value |
|---|---|
| digit classifier, held-out real digits | {m["classifier_test_accuracy"]:.3f} |
| mini CLIP zero-shot accuracy, held-out real digits (`a handwritten {{word}}`) | {m["clip_zero_shot_accuracy"]:.3f} |
| AUROC of p_h = cos(x, "a handwritten three"), real 3s vs other digits | {m["clip_auroc_three"]:.3f} |
| mean cos with "a handwritten three": real 3s / other digits | {m["clip_cos_three_on_threes"]:.3f} / {m["clip_cos_three_on_others"]:.3f} |
| generated digit accuracy, `a handwritten {{word}}`, 25 DDIM steps, CFG {info["cfg"]}, {info["gen_per_digit"]} seeds per digit | {m["generation_accuracy"]:.3f} |

Per-digit generation accuracy: {", ".join(f"{d}: {a:.2f}" for d, a in enumerate(m["generation_per_digit"]))}.

Safe sampling results on this model (benchmarks/mini_quality.py) are in `docs/mini.md`.
Size of this folder: {info["size_mb"]:.1f} MB.
"""
    )
    (out / "MODEL_CARD.md").write_text(text)


def _machine_facts() -> dict:
    """What float results depend on besides the seed: CPU model, kernel, BLAS/ISA, versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import sklearn

    return dict(
        cpu=cpu,
        kernel=platform.release(),
        python=platform.python_version(),
        numpy=np.__version__,
        sklearn=sklearn.__version__,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        mkldnn=torch.backends.mkldnn.is_available(),
    )


# ============================================================================ main
PLAN = dict(  # steps and wall-time caps (s) per stage; the full plan has no clock: every stage
    # runs to its planned step count, so the weights depend on the seed and threads, not the speed.
    full=dict(clip=(300, None), vae=(800, None), unet=(3000, None), classifier=(400, None)),
    quick=dict(clip=(3, 60), vae=(3, 60), unet=(3, 60), classifier=(3, 60)),
)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m safescore.sd.mini.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="a few steps per stage on every 4th image (for tests)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--reproduce",
        metavar="TRAINING_LOG",
        default=None,
        help="repeat the run that wrote this training_log.json exactly: each stage stops at the "
        "step that run reached (no time budget); use its --seed and --threads",
    )
    args = parser.parse_args(argv)
    import diffusers
    import transformers

    torch.set_num_threads(args.threads)
    # Not torch.use_deterministic_algorithms: its fallbacks make the VAE's upsampling backward
    # 20x slower; CPU kernels at a fixed thread count are deterministic run to run here.
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    plan = PLAN["quick" if args.quick else "full"]
    out = Path(args.out)
    log: dict = {}
    if args.reproduce is not None:
        stages = json.loads(Path(args.reproduce).read_text(encoding="utf-8"))["stages"]
        log["_stop_at"] = {name: stages[name]["steps"] for name in plan}
        for name, (steps, _) in plan.items():
            if stages[name]["planned"] != steps:
                raise SystemExit(
                    f"--reproduce: stage {name} planned {stages[name]['planned']} steps there, "
                    f"{steps} here; that log comes from another version of this script"
                )
    data = load_data(args.seed)
    if args.quick:  # tests: every 4th image, so that encoding the training set and measuring
        data = _every_kth(data, 4)  # on the held-out digits cost little as well
    tokenizer = build_tokenizer()
    clip = train_clip(data, tokenizer, *plan["clip"], args.seed, log)
    metrics = clip_metrics(clip, tokenizer, data)
    tqdm.write(f"clip: {metrics}")
    vae = train_vae(data, *plan["vae"], args.seed, log)
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(**clip.config.text_config.to_dict()))
    text_encoder.load_state_dict(clip.text_model.state_dict())  # strict: same keys
    text_encoder.eval()
    copies = 1 if args.quick else 8
    unet = train_unet(data, vae, text_encoder, tokenizer, *plan["unet"], args.seed, log, copies)
    classifier = train_classifier(data, *plan["classifier"], args.seed, log)
    metrics["classifier_test_accuracy"] = log["classifier_test_accuracy"]
    metrics["vae_test_mse"] = log["vae_test_mse"]
    metrics["vae_scaling_factor"] = log["vae_scaling_factor"]
    pipe = save_all(
        out,
        clip=clip,
        tokenizer=tokenizer,
        vae=vae,
        unet=unet,
        classifier=classifier,
        classifier_acc=log["classifier_test_accuracy"],
    )
    pipe.set_progress_bar_config(disable=True)
    per_digit = 1 if args.quick else 20
    cfg = 3.0
    t_gen = time.perf_counter()
    acc, per = generation_accuracy(
        pipe, classifier, per_digit=per_digit, steps=5 if args.quick else 25, guidance_scale=cfg
    )
    log["generation_eval"] = round(time.perf_counter() - t_gen, 1)
    metrics["generation_accuracy"], metrics["generation_per_digit"] = acc, per
    tqdm.write(f"generation accuracy {acc:.3f}: {[round(a, 2) for a in per]}")
    seconds = time.perf_counter() - t_start
    quick = " --quick" if args.quick else ""
    log.pop("_stop_at", None)
    info = dict(
        command=(
            f"python -m safescore.sd.mini.train --out {args.out} --seed {args.seed} "
            f"--threads {args.threads}{quick}"
        ),
        seed=args.seed,
        n_train=len(data["train_y"]),
        n_test=len(data["test_y"]),
        vocab_size=len(tokenizer),
        params={
            "text encoder (CLIP text tower)": (
                "CLIPTextModel",
                sum(p.numel() for p in text_encoder.parameters()),
            ),
            "CLIP (text + vision)": ("CLIPModel", sum(p.numel() for p in clip.parameters())),
            "VAE (factor 2, 4 latent channels)": (
                "AutoencoderKL",
                sum(p.numel() for p in vae.parameters()),
            ),
            "UNet (8×8×4 latents)": (
                "UNet2DConditionModel",
                sum(p.numel() for p in unet.parameters()),
            ),
            "digit classifier": (
                "DigitClassifier (CNN)",
                sum(p.numel() for p in classifier.parameters()),
            ),
        },
        stages=log,
        metrics=metrics,
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
        threads=args.threads,
        machine=f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        **_machine_facts(),
        load_start=f"{load_start:.2f}",
        load_end=f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a",
        seconds=seconds,
        cfg=cfg,
        gen_per_digit=per_digit,
    )
    info["size_mb"] = _dir_size(out) / 1e6
    (out / "training_log.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    write_model_card(out, info)
    tqdm.write(f"wrote {out} ({info['size_mb']:.1f} MB) in {seconds:.0f} s")
    return out


if __name__ == "__main__":
    main()
