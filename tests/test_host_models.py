"""Model families: shapes, the extractor/classifier split, spec round trip, sizes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgecl.errors import ConfigError  # noqa: E402
from edgecl.host.models import ARCHS, build_model, n_parameters  # noqa: E402

SHAPES = {"mlp": (28, 28), "cnn": (28, 28), "imu-cnn": (100, 6)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("embed_dim", [None, 16])
def test_forward_is_classifier_of_extractor(arch, embed_dim):
    torch.manual_seed(0)
    m = build_model(arch, SHAPES[arch], n_classes=5, embed_dim=embed_dim).eval()
    x = torch.randn(4, *SHAPES[arch])
    z = m.extractor(x)
    want = {"mlp": 100, "cnn": 64, "imu-cnn": 64}[arch] if embed_dim is None else embed_dim
    assert z.shape == (4, want) and m.embed_dim == want
    assert m(x).shape == (4, 5)
    torch.testing.assert_close(m(x), m.classifier(z))


@pytest.mark.parametrize("arch", ARCHS)
def test_spec_rebuilds_same_architecture(arch):
    m = build_model(arch, SHAPES[arch], 7, embed_dim=24, width=8, batchnorm=False)
    spec = m.spec
    assert {"arch", "in_shape", "n_classes", "embed_dim"} <= set(spec)
    m2 = build_model(**spec)
    assert m2.spec == spec
    assert [(k, v.shape) for k, v in m.state_dict().items()] == [
        (k, v.shape) for k, v in m2.state_dict().items()
    ]
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.modules())


def test_mlp_is_the_reference_ewc_network():
    m = build_model("mlp", (784,), 10)
    layers = [type(x).__name__ for x in m.extractor] + [type(m.classifier).__name__]
    assert layers == [
        "Flatten",
        *["Linear", "BatchNorm1d", "ReLU"] * 2,
        "Linear",
    ]
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [(784, 100), (100, 100), (100, 10)]


def test_imu_cnn_is_small_and_channels_last():
    m = build_model("imu-cnn", (100, 6), 7)
    assert n_parameters(m) * 4 < 200_000  # well under the 1 MB ONNX budget
    # Channels last: a window of rows (length, channels); other lengths work too.
    assert m.extractor(torch.zeros(1, 64, 6)).shape == (1, 64)
    with pytest.raises(RuntimeError):
        m.extractor(torch.zeros(1, 6, 100))  # channels-first input is rejected by the conv


def test_cnn_accepts_channel_first_images():
    m = build_model("cnn", (3, 16, 12), 4).eval()
    assert m(torch.zeros(2, 3, 16, 12)).shape == (2, 4)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"arch": "rnn", "in_shape": (3,), "n_classes": 2}, "arch"),
        ({"arch": "mlp", "in_shape": (), "n_classes": 2}, "in_shape"),
        ({"arch": "mlp", "in_shape": (4,), "n_classes": 1}, "n_classes"),
        ({"arch": "mlp", "in_shape": (4,), "n_classes": 3, "embed_dim": 0}, "embed_dim"),
        ({"arch": "imu-cnn", "in_shape": (100,), "n_classes": 3}, "in_shape"),
        ({"arch": "cnn", "in_shape": (1, 2, 3, 4), "n_classes": 3}, "in_shape"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        build_model(**kwargs)
