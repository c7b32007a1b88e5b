from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optiscope import landscape as L

from .conftest import cnn_with_bn


def eleven_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(3, 3) for _ in range(11)])


class TestNames:
    def test_exact_name_beats_substring(self):
        m = eleven_layers()
        assert L.find_parameter(m, "0.weight") == "0.weight"
        assert L.find_parameter(m, "10.weight") == "10.weight"
        # The guide's loop would stop at the first name containing the string.
        assert [n for n, _ in m.named_parameters() if "0.weight" in n] == ["0.weight", "10.weight"]

    def test_unique_substring(self):
        m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        m.add_module("head", nn.Linear(1, 1, bias=False))
        assert L.find_parameter(m, "head") == "head.weight"

    @pytest.mark.parametrize("name", ["weight", "nothing"])
    def test_ambiguous_or_unknown_lists_names(self, name):
        m = eleven_layers()
        with pytest.raises(ValueError, match="10.bias"):
            L.find_parameter(m, name)

    def test_axis_direction(self):
        m = nn.Linear(3, 2)
        d = L.axis_direction(m, "weight", 4)
        assert list(d) == ["weight"]
        expected = torch.zeros(6)
        expected[4] = 1
        assert torch.equal(d["weight"].flatten(), expected)
        assert L.axis_direction(m, "weight", -1)["weight"].flatten()[-1] == 1

    @pytest.mark.parametrize("index", [6, -7, 100])
    def test_axis_index_out_of_range(self, index):
        with pytest.raises(ValueError, match="out of range"):
            L.axis_direction(nn.Linear(3, 2), "weight", index)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


class TestRandomDirection:
    def test_filter_norms_match_weights_conv_and_linear(self):
        m = cnn_with_bn()
        d = L.random_direction(m, seed=3)
        params = dict(m.named_parameters())
        for name, p in params.items():
            if p.dim() > 1:
                torch.testing.assert_close(_norms(d[name]), _norms(p.detach()), rtol=1e-5, atol=0)
            else:  # biases and BatchNorm affine parameters are left out
                assert torch.count_nonzero(d[name]) == 0

    def test_ignore_none_keeps_1d_with_matching_magnitudes(self):
        m = cnn_with_bn()
        d = L.random_direction(m, ignore=None, seed=0)
        for name, p in m.named_parameters():
            if p.dim() == 1:
                torch.testing.assert_close(d[name].abs(), p.detach().abs())

    def test_layer_and_model_normalisation(self):
        m = cnn_with_bn()
        w = dict(m.named_parameters())
        d = L.random_direction(m, normalization="layer", ignore=None, seed=0)
        for n, p in w.items():
            torch.testing.assert_close(d[n].norm(), p.detach().norm(), rtol=1e-5, atol=1e-7)
        d = L.random_direction(m, normalization="model", ignore=None, seed=0)
        total_d = torch.sqrt(sum(t.pow(2).sum() for t in d.values()))
        total_w = torch.sqrt(sum(p.detach().pow(2).sum() for p in w.values()))
        torch.testing.assert_close(total_d, total_w, rtol=1e-5, atol=0)

    def test_none_is_the_raw_gaussian(self):
        m = nn.Linear(4, 3)
        d = L.random_direction(m, normalization="none", ignore=None, seed=5)
        g = torch.Generator().manual_seed(5)
        torch.testing.assert_close(d["weight"], torch.randn((3, 4), generator=g))
        torch.testing.assert_close(d["bias"], torch.randn((3,), generator=g))

    def test_seed_and_generator_reproducible(self):
        m = cnn_with_bn()
        a, b = L.random_direction(m, seed=7), L.random_direction(m, seed=7)
        c = L.random_direction(m, generator=torch.Generator().manual_seed(7))
        other = L.random_direction(m, seed=8)
        for n in a:
            assert torch.equal(a[n], b[n]) and torch.equal(a[n], c[n])
        assert not torch.equal(a["0.weight"], other["0.weight"])
        assert a.meta["normalization"] == "filter" and a.meta["seed"] == 7

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"normalization": "filters"},
            {"ignore": "bias"},
            {"seed": 1, "generator": torch.Generator()},
        ],
    )
    def test_bad_arguments(self, kwargs):
        with pytest.raises(ValueError):
            L.random_direction(nn.Linear(2, 2), **kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"n": "2"}, TypeError, "n must be an integer"),
            ({"n": 2.0}, TypeError, "n must be an integer"),
            ({"n": True}, TypeError, "n must be an integer"),
            ({"n": 0}, ValueError, "n must be an integer >= 1"),
            ({"seed": "0"}, TypeError, "seed"),
            ({"seed": -1}, ValueError, "seed"),
            ({"normalization": 1}, TypeError, "normalization"),
            ({"normalization": "filters"}, ValueError, "normalization"),
        ],
    )
    def test_random_directions_kind_and_value_errors(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            L.random_directions(nn.Linear(2, 2), **kwargs)

    @settings(max_examples=25, deadline=None)
    @given(
        out_f=st.integers(1, 6),
        in_f=st.integers(1, 6),
        scale=st.floats(1e-3, 1e3),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_filter_norm_property(self, out_f, in_f, scale, seed):
        m = nn.Linear(in_f, out_f)
        with torch.no_grad():
            m.weight.mul_(scale)
        d = L.random_direction(m, seed=seed)
        torch.testing.assert_close(
            _norms(d["weight"]), _norms(m.weight.detach()), rtol=1e-4, atol=0
        )

    def test_orthogonal_directions(self):
        m = cnn_with_bn()
        d1, d2, d3 = L.random_directions(m, 3, seed=0, orthogonal=True)
        flat = [torch.cat([d[n].flatten() for n in d1]).double() for d in (d1, d2, d3)]
        raw = L.random_directions(m, 3, seed=0)
        assert abs(float(flat[0] @ flat[1])) < 1e-6 * float(flat[0].norm() * flat[1].norm())
        assert abs(float(flat[0] @ flat[2])) < 1e-6 * float(flat[0].norm() * flat[2].norm())
        assert abs(float(flat[1] @ flat[2])) < 1e-6 * float(flat[1].norm() * flat[2].norm())
        raw_norm = torch.cat([raw[1][n].flatten() for n in d1]).double().norm()
        torch.testing.assert_close(flat[1].norm(), raw_norm)
        assert torch.equal(d1["0.weight"], raw[0]["0.weight"])

    def test_orthogonalize_parallel_raises(self):
        a = {"w": torch.tensor([1.0, 2.0])}
        with pytest.raises(ValueError, match="parallel"):
            L.orthogonalize(a, {"w": torch.tensor([2.0, 4.0])})
        with pytest.raises(ValueError, match="zero"):
            L.orthogonalize({"w": torch.zeros(2)}, a)


class TestTrajectory:
    def test_interpolation_direction(self):
        a, b = cnn_with_bn(0), cnn_with_bn(1)
        d = L.interpolation_direction(a.state_dict(), b.state_dict())
        assert "1.running_mean" not in d and "1.num_batches_tracked" not in d
        assert set(d) == {n for n, _ in a.named_parameters()}
        torch.testing.assert_close(
            d["0.weight"], b.state_dict()["0.weight"] - a.state_dict()["0.weight"]
        )

    def test_interpolation_shape_mismatch(self):
        with pytest.raises(ValueError, match="shape"):
            L.interpolation_direction({"w": torch.zeros(2)}, {"w": torch.zeros(3)})

    def _path(self):
        torch.manual_seed(0)
        final = {"a": torch.randn(4, 3), "b": torch.randn(5)}
        states = []
        for t in range(8):
            states.append({k: v + (0.5 * t) * torch.randn_like(v) for k, v in final.items()})
        return final, states

    def test_pca_matches_numpy_svd(self):
        final, states = self._path()
        d1, d2, ev = L.pca_directions(final, states)
        m = np.stack(
            [np.concatenate([(s[k] - final[k]).numpy().ravel() for k in final]) for s in states]
        )
        m = m - m.mean(axis=0)
        _, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
        got1 = np.concatenate([d1[k].numpy().ravel() for k in final])
        got2 = np.concatenate([d2[k].numpy().ravel() for k in final])
        assert abs(abs(got1 @ vt[0]) - 1) < 1e-5 and abs(abs(got2 @ vt[1]) - 1) < 1e-5
        np.testing.assert_allclose(ev, (s**2 / (s**2).sum())[:2], rtol=1e-6)

    def test_pca_needs_two_states(self):
        final, states = self._path()
        with pytest.raises(ValueError, match="at least 2"):
            L.pca_directions(final, states[:1])

    def test_projection_recovers_points_on_the_plane(self):
        final, _ = self._path()
        d1 = {k: torch.randn_like(v) for k, v in final.items()}
        d2 = {k: torch.randn_like(v) for k, v in final.items()}  # not orthogonal to d1
        coords = np.array([[0.5, -1.0], [2.0, 0.25], [0.0, 0.0]])
        states = [{k: final[k] + a * d1[k] + b * d2[k] for k in final} for a, b in coords]
        np.testing.assert_allclose(L.project_trajectory(final, states, d1, d2), coords, atol=1e-5)

    def test_projection_parallel_directions(self):
        final, states = self._path()
        d1 = {k: torch.ones_like(v) for k, v in final.items()}
        with pytest.raises(ValueError, match="parallel"):
            L.project_trajectory(final, states, d1, {k: 2 * v for k, v in d1.items()})
