"""Scorers of the evaluation, offline: NudeNet on a real photo, Q16 / CLIP coherence / aesthetic
on a tiny random CLIP against closed forms, and the safe loaders (no pickle, weights-only)."""

import os
import pickle
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from safescore.eval.scorers import (
    AestheticMLP,
    AestheticScorer,
    CLIPCoherenceScorer,
    CLIPEmbedder,
    NudeNetScorer,
    Q16Scorer,
    ScoreSuite,
    convert_q16_pickle,
    load_aesthetic_mlp,
    load_q16_embeddings,
    read_pickled_array,
)
from safescore.sd.tiny import tiny_clip

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def embedder():
    model, tokenizer = tiny_clip(seed=0)
    return CLIPEmbedder(model, tokenizer, batch_size=2)


@pytest.fixture(scope="module")
def images():
    g = np.random.default_rng(0)
    noise = [g.integers(0, 256, size=(48, 40, 3), dtype=np.uint8) for _ in range(2)]
    return [str(GRACE), *noise]


def test_nudenet_detects_face_on_grace_hopper_batched():
    black = np.zeros((64, 64, 3), dtype=np.uint8)
    thesis = NudeNetScorer().score([str(GRACE), black])
    assert [r["nudenet_any"] for r in thesis] == [False, False]  # a face is not nudity
    assert thesis[0]["nudenet_labels"] == ["FACE_FEMALE"]
    assert set(thesis[0]) >= {"nudenet_female_breast", "nudenet_anus", "nudenet_male_genitalia"}
    face = NudeNetScorer(labels=["FACE_FEMALE"]).score([str(GRACE), black])
    assert face[0]["nudenet_face_female"] and face[0]["nudenet_any"]
    assert 0.5 < face[0]["nudenet_max"] < 0.8  # ≈ 0.61
    assert not face[1]["nudenet_any"] and face[1]["nudenet_max"] == 0.0
    strict = NudeNetScorer(labels=["FACE_FEMALE"], threshold=0.9).score([str(GRACE)])
    assert not strict[0]["nudenet_any"]


def test_nudenet_bad_input(tmp_path):
    with pytest.raises(ValueError, match="known: FEMALE_GENITALIA_COVERED"):
        NudeNetScorer(labels=["NUDE"])
    with pytest.raises(ValueError, match="threshold must be in"):
        NudeNetScorer(threshold=0.1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not read image file"):
        NudeNetScorer().score([str(broken)])


def test_embedder_shapes_and_batching(embedder, images):
    pixels = embedder.preprocess(images)
    assert pixels.shape == (3, 3, embedder.image_size, embedder.image_size)
    embeds = embedder.image_embeds(images)  # batch_size 2: two forward passes
    assert embeds.shape == (3, embedder.embed_dim)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(embedder.image_embeds(images[2:]), embeds[2:], atol=1e-5, rtol=0)


def test_q16_closed_form_and_argmax(embedder, images):
    embeds = embedder.image_embeds(images)
    # make image 1 the "inappropriate" prompt and image 2 the "appropriate" one
    prompts = torch.stack([embeds[2] * 3.0, embeds[1]]).numpy()  # norms do not matter
    rows = Q16Scorer(embedder, prompts).score(images)
    cos = embeds @ torch.nn.functional.normalize(torch.from_numpy(prompts), dim=-1).T
    expected = torch.softmax(100 * cos, dim=-1)[:, 1]
    np.testing.assert_allclose(
        [r["q16_prob"] for r in rows], expected.numpy(), rtol=1e-5, atol=1e-7
    )
    assert rows[1]["q16_detected"] and rows[1]["q16_prob"] > 0.5
    assert not rows[2]["q16_detected"] and rows[2]["q16_prob"] < 0.5
    with pytest.raises(ValueError, match="embeds in 32"):
        Q16Scorer(embedder, np.zeros((2, 768), dtype=np.float32))


def test_q16_embedding_files_and_restricted_unpickler(tmp_path):
    array = np.random.default_rng(1).standard_normal((2, 768)).astype(np.float16)
    np.save(tmp_path / "q16.npy", array)
    np.testing.assert_array_equal(
        load_q16_embeddings(tmp_path / "q16.npy"), array.astype(np.float32)
    )
    from safetensors.numpy import save_file

    save_file({"embeddings": array}, str(tmp_path / "q16.safetensors"))
    np.testing.assert_array_equal(load_q16_embeddings(tmp_path / "q16.safetensors"), array)
    # the upstream format: a pickled float16 array (any protocol) -> converted once to .npy
    for protocol in (2, 4, 5):
        (tmp_path / "prompts.p").write_bytes(pickle.dumps(array, protocol=protocol))
        converted = convert_q16_pickle(tmp_path / "prompts.p", tmp_path / "converted.npy")
        np.testing.assert_array_equal(converted, array.astype(np.float32))
    np.testing.assert_array_equal(load_q16_embeddings(tmp_path / "converted.npy"), converted)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_q16_embeddings(tmp_path / "prompts.p")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain numpy array"):
        load_q16_embeddings(tmp_path / "objects.npy")


class _Payload:
    """A pickle that would run a command if unpickled with pickle.load."""

    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_restricted_unpickler_refuses_everything_but_arrays(tmp_path):
    with pytest.raises(
        ValueError, match="refusing to load posix.system|refusing to load nt.system"
    ):
        read_pickled_array(pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="refusing pickle content of type dict"):
        read_pickled_array(pickle.dumps({"embeddings": np.zeros((2, 4))}))
    with pytest.raises(ValueError, match="refusing to load builtins.object"):
        read_pickled_array(pickle.dumps(np.array([object()], dtype=object)))
    (tmp_path / "evil.p").write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="only a numpy array is accepted"):
        convert_q16_pickle(tmp_path / "evil.p", tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


def test_clip_coherence_is_the_cosine(embedder, images):
    prompts = ["a photo of a woman", "noise", "static"]
    rows = CLIPCoherenceScorer(embedder).score(images, prompts=prompts)
    expected = (embedder.image_embeds(images) * embedder.text_embeds(prompts)).sum(-1)
    np.testing.assert_allclose([r["clip_coherence"] for r in rows], expected.numpy(), atol=1e-6)
    assert all(-1 <= r["clip_coherence"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="one prompt per image"):
        CLIPCoherenceScorer(embedder).score(images, prompts=["one"])


def test_aesthetic_mlp_architecture_and_weights_only_loading(embedder, images, tmp_path):
    shapes = [tuple(p.shape) for p in AestheticMLP().parameters() if p.ndim == 2]
    assert shapes == [(1024, 768), (128, 1024), (64, 128), (16, 64), (1, 16)]
    torch.manual_seed(3)
    mlp = AestheticMLP(embedder.embed_dim)
    torch.save(mlp.state_dict(), tmp_path / "aesthetic.pth")
    loaded = load_aesthetic_mlp(tmp_path / "aesthetic.pth")
    rows = AestheticScorer(embedder, tmp_path / "aesthetic.pth").score(images)
    with torch.no_grad():
        expected = mlp.eval()(embedder.image_embeds(images))
    np.testing.assert_allclose([r["aesthetic"] for r in rows], expected.numpy(), rtol=1e-5)
    assert loaded.input_dim == embedder.embed_dim
    torch.save({"model": _Payload()}, tmp_path / "evil.pth")  # not loadable weights-only
    with pytest.raises(ValueError, match="weights-only"):
        load_aesthetic_mlp(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="needs CLIP ViT-L/14: 768"):
        AestheticScorer(embedder, AestheticMLP(768))


def test_suite_shares_embeddings_and_merges_columns(embedder, images):
    torch.manual_seed(0)
    prompts_q16 = np.random.default_rng(0).standard_normal((2, embedder.embed_dim))
    scorers = [
        NudeNetScorer(),
        Q16Scorer(embedder, prompts_q16),
        CLIPCoherenceScorer(embedder),
        AestheticScorer(embedder, AestheticMLP(embedder.embed_dim)),
    ]
    suite = ScoreSuite(scorers)
    rows = suite.score(images, prompts=["a", "b", "c"])
    assert set(rows[0]) == set(suite.columns)
    alone = scorers[1].score(images)
    assert [r["q16_prob"] for r in rows] == pytest.approx([r["q16_prob"] for r in alone], rel=1e-5)
