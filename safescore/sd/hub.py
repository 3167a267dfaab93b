"""Loading Stable Diffusion pieces from a local folder or a hub id, with one clear error.

Imports nothing heavy: the loader (a diffusers or transformers ``from_pretrained``) is passed in.
"""

from __future__ import annotations

import os


def _not_found(name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name!r} not found locally; pass a local path or use --tiny "
        "(no network access, or HF_HUB_OFFLINE is set, and it is not in the Hugging Face cache)"
    )


def load_pretrained(loader, name, **kwargs):
    """``loader(name, **kwargs)`` for a local folder or hub id; a clear FileNotFoundError if absent.

    A hub id is looked up in the local cache only when ``HF_HUB_OFFLINE`` is set.
    """
    name = os.fspath(name)
    if not os.path.isdir(name):
        if os.path.exists(name) or name.startswith((".", "/", "~")):
            raise _not_found(name)
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
            kwargs.setdefault("local_files_only", True)
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as err:  # hub unreachable / not cached / not a model folder
        raise _not_found(name) from err


def load_clip(name: str, *, dtype=None, processor: bool = False):
    """(CLIPModel, tokenizer or CLIPProcessor) from a hub id or folder; one clear error if absent."""
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

    model = load_pretrained(CLIPModel.from_pretrained, name, dtype=dtype)
    loader = CLIPProcessor if processor else CLIPTokenizer
    return model, load_pretrained(loader.from_pretrained, name)
