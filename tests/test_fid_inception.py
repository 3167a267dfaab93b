"""FID / KID through the real-Inception path (issue 18, item 6): torch-fidelity's Inception-v3
architecture with RANDOM weights saved to a local file (nothing downloaded), compared with
torchmetrics' own FID/KID at the standard resize. Skipped where torch-fidelity (and a
torchvision it can import) is not installed (the optional `fid` extra)."""

import pickle

import pytest
import torch

from safescore.eval.quality import fid_kid, inception_features


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as fe
    except Exception as exc:  # not installed, or a torchvision built for another torch
        pytest.skip(f"torch-fidelity not importable ({type(exc).__name__}: {exc})")
    mp = pytest.MonkeyPatch()
    # Build the architecture without its download, keeping the random initialisation.
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
    torch.manual_seed(0)
    net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    mp.undo()
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def _images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8)


def test_weights_file_path_equals_torchmetrics_at_the_standard_resize(inception_file):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _images(3, (40, 40), 0), _images(3, (40, 40), 1)
    res = fid_kid(real, fake, inception_weights=inception_file, kid_subset_size=2, kid_subsets=5)
    kwargs = dict(feature_extractor_weights_path=str(inception_file), antialias=False)
    fid = FrechetInceptionDistance(feature=2048, **kwargs)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert res["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)
    # torchmetrics' KID takes no weights path: give it the same network as a module.
    net = inception_features(inception_file)
    kid = KernelInceptionDistance(feature=net, subsets=5, subset_size=2)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    assert res["kid_mean"] == pytest.approx(float(kid.compute()[0]), rel=1e-4)
    assert res["features"].startswith("Inception-v3 (2048") and net.use_antialias is False
    # Images of several sizes go in at their own size (no pre-stretch); identical sets: FID 0.
    mixed = [_images(1, (40, 30), 2)[0], _images(1, (50, 20), 4)[0]]
    assert (
        abs(fid_kid(mixed, mixed, inception_weights=inception_file, kid_subset_size=2)["fid"])
        < 1e-3
    )


def test_weights_file_is_read_weights_only(tmp_path, inception_file):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(ValueError, match="not a weights-only PyTorch state dict"):
        inception_features(evil)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="not torch-fidelity's Inception-v3 weights"):
        inception_features(wrong)
