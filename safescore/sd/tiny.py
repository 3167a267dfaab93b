"""Offline Stable Diffusion components with RANDOM weights, built from configs.

Nothing here downloads anything. The tiny components (≈1.4 M-parameter UNet, a VAE with factor 2,
a 5-layer CLIP text encoder, a tiny CLIPModel and safety checker) exercise exactly the code paths
of the real models in tests, notebooks and ``safescore generate --tiny``; the ``sd15`` variant has
Stable Diffusion v1.5's real architecture (UNet 860 M, VAE, CLIP ViT-L/14 text encoder) with random
weights, for timing and memory measurements without weights.

Images generated from these components are noise: every caller must say the weights are random
(`RANDOM_WEIGHTS_BANNER`).
"""

from __future__ import annotations

import torch

RANDOM_WEIGHTS_BANNER = (
    "RANDOM WEIGHTS: tiny random-weight components built from configs; "
    "the images are noise and the numbers are not a real result"
)

# A few byte-level BPE merges, so that common words of the prompts become single tokens.
_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "o n", "i n", "e r", "a t", "r e", "o r")
_VOCAB_SIZE = 1000  # text-config vocabulary, > the tokenizer's ~530 tokens
_MAX_LENGTH = 77  # CLIP's context length


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level mapping: byte value -> a printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def tiny_tokenizer():
    """A CLIP tokenizer from a tiny byte-level BPE vocabulary, ``model_max_length`` 77.

    The vocabulary holds the 256 byte symbols, the same with ``</w>``, the tokens of a few merges
    and ``<|startoftext|>`` / ``<|endoftext|>``; every string tokenizes (byte fallback).
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    merges = [tuple(m.split()) for m in _MERGES]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=_MAX_LENGTH)


def _text_config(tokenizer, **overrides):
    from transformers import CLIPTextConfig

    config = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=_VOCAB_SIZE,
        max_position_embeddings=_MAX_LENGTH,
    )
    config.update(overrides)
    return CLIPTextConfig(**config)


def ddim_scheduler(num_train_timesteps: int = 1000):
    """Stable Diffusion's DDIM scheduler (scaled-linear β 0.00085..0.012, ``steps_offset=1``)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _tiny_vae(sample_size: int = 64):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=sample_size,
    )


def tiny_taesd(seed: int = 0):
    """A tiny random ``AutoencoderTiny`` (TAESD architecture) for `tiny_components`' latents.

    4 latent channels, factor 2 (two decoder blocks of 16 channels), scaling factor 1 like TAESD:
    a cheap stand-in decoder for the density (``density_vae=``). RANDOM weights.
    """
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).eval()


def tiny_components(seed: int = 0, sample_size: int = 32) -> dict:
    """Tiny random SD 1.x components: ``dict(vae, text_encoder, tokenizer, unet, scheduler)``.

    UNet (block_out_channels (32, 64), ``sample_size`` 32, cross_attention_dim 32), VAE with
    factor 2 (so the default image is 64²; ``sample_size=16``: 32², a quarter of the work), CLIP
    text encoder (hidden 32, 5 layers), DDIM scheduler with ``steps_offset=1``. Deterministic in
    ``seed``; float32 on the CPU; RANDOM weights.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    vae = _tiny_vae(2 * sample_size)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    for module in (unet, vae, text_encoder):
        module.eval()
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim_scheduler(),
    )


def tiny_sdxl_components(seed: int = 0) -> dict:
    """Tiny random SDXL components (two text encoders, ``text_time`` conditioning), DDIM scheduler.

    Keys: vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler; for
    ``diffusers.StableDiffusionXLPipeline(**components)``. RANDOM weights.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        norm_num_groups=1,
    )
    torch.manual_seed(seed)
    vae = _tiny_vae()
    vae.register_to_config(scaling_factor=0.13025)  # SDXL's VAE scaling
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer, projection_dim=32))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval()
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=ddim_scheduler(),
    )


def _tiny_clip_config(tokenizer):
    from transformers import CLIPConfig

    text = _text_config(tokenizer, hidden_size=32, num_hidden_layers=2).to_dict()
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def tiny_clip(seed: int = 0):
    """A tiny random ``CLIPModel`` (32² images, 32-dim embeddings) and its tokenizer.

    Returns ``(clip_model, tokenizer)``; float32, eval mode, RANDOM weights.
    """
    from transformers import CLIPModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = CLIPModel(_tiny_clip_config(tokenizer)).eval()
    return model, tokenizer


def tiny_safety_checker(seed: int = 0):
    """A tiny random ``StableDiffusionSafetyChecker``: 17 concept and 3 special-care embeddings.

    The concept embeddings are random unit vectors and the thresholds (``*_embeds_weights``)
    0.1, so a random image passes some of them. RANDOM weights.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    torch.manual_seed(seed)
    checker = StableDiffusionSafetyChecker(_tiny_clip_config(tiny_tokenizer())).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("concept_embeds", "special_care_embeds"):
            p = getattr(checker, name)
            p.copy_(torch.nn.functional.normalize(torch.randn(p.shape, generator=g), dim=-1))
        checker.concept_embeds_weights.fill_(0.1)
        checker.special_care_embeds_weights.fill_(0.1)
    return checker


def tiny_pipeline(seed: int = 0, sample_size: int = 32):
    """`SafeStableDiffusionPipeline` on `tiny_components` (RANDOM weights)."""
    from .pipeline import SafeStableDiffusionPipeline

    pipe = SafeStableDiffusionPipeline(**tiny_components(seed, sample_size))
    pipe.random_weights = True
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- SD v1.5 shaped
def sd15_components(
    seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> dict:
    """Stable Diffusion v1.5's real architecture with RANDOM weights (for timing and memory).

    UNet2DConditionModel (860 M parameters; block_out_channels (320, 640, 1280, 1280),
    cross_attention_dim 768, sample_size 64), AutoencoderKL (block_out_channels
    (128, 256, 512, 512), factor 8, so 512² images), CLIP ViT-L/14 text encoder (12 layers,
    hidden 768), DDIM scheduler with ``steps_offset=1``; the tokenizer is the tiny byte-level one
    (ids < 1000 fit the 49408-token vocabulary). Built directly on ``device`` in ``dtype``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    device = torch.device(device)
    with device:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=(
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            up_block_types=(
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ),
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[128, 256, 512, 512],
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            _text_config(
                tokenizer,
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                projection_dim=768,
                hidden_act="quick_gelu",
                vocab_size=49408,
            )
        )
    for module in (unet, vae, text_encoder):
        module.to(dtype=dtype).eval()
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim_scheduler(),
    )


def sd15_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """`SafeStableDiffusionPipeline` on `sd15_components` (RANDOM weights)."""
    from .pipeline import SafeStableDiffusionPipeline

    pipe = SafeStableDiffusionPipeline(**sd15_components(seed, dtype=dtype, device=device))
    pipe.random_weights = True
    return pipe


def sd15_taesd(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """diffusers' ``AutoencoderTiny`` with its default configuration (TAESD for SD 1.x/2.x
    latents, factor 8) and RANDOM weights, for timing the cheap decoder."""
    from diffusers import AutoencoderTiny

    with torch.device(device):
        torch.manual_seed(seed)
        model = AutoencoderTiny()
    if dtype != model.dtype:
        model = model.to(dtype=dtype)
    return model.eval()


def sd15_clip(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """CLIP ViT-B/16 architecture (the author's p_h encoder) with RANDOM weights: (model, tokenizer)."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_tokenizer()
    text = _text_config(
        tokenizer,
        hidden_size=512,
        intermediate_size=2048,
        num_attention_heads=8,
        num_hidden_layers=12,
        vocab_size=49408,
    ).to_dict()
    vision = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    )
    with torch.device(device):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512))
    return model.to(dtype=dtype).eval(), tokenizer
