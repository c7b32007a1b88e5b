from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope import landscape as L

from .conftest import mlp_with_dropout


def _plane(f, n1=9, n2=7):
    a, b = np.linspace(-1, 1, n1), np.linspace(-2, 2, n2)
    return L.Landscape(
        a,
        b,
        {"loss": f(a[:, None], b[None, :]), "acc": np.zeros((n1, n2))},
        {"seed": 3, "note": "x"},
    )


class TestLandscape:
    def test_save_load_round_trip(self, tmp_path, digits):
        X, y = digits
        model = mlp_with_dropout()
        d1, d2 = L.random_directions(model, 2, seed=0)
        ls = L.plane(
            model,
            torch.nn.CrossEntropyLoss(),
            X,
            y,
            d1=d1,
            d2=d2,
            num_points=(4, 3),
            metrics=("loss", "accuracy"),
        )
        path = ls.save(tmp_path / "p.npz")
        back = L.Landscape.load(path)
        np.testing.assert_array_equal(back.alphas, ls.alphas)
        np.testing.assert_array_equal(back.betas, ls.betas)
        assert list(back.values) == ["loss", "accuracy"]
        for k in ls.values:
            np.testing.assert_array_equal(back.values[k], ls.values[k])
        assert back.metadata == json.loads(json.dumps(ls.metadata))
        assert back.metadata["directions"][0]["normalization"] == "filter"
        assert back.metadata["num_samples"] == 240

    def test_line_round_trip(self, tmp_path):
        ls = L.Landscape(np.linspace(0, 1, 4), None, {"loss": np.arange(4.0)})
        back = L.Landscape.load(ls.save(tmp_path / "l.npz"))
        assert back.betas is None and not back.is_2d
        np.testing.assert_array_equal(back.loss, np.arange(4.0))

    def test_save_writes_exactly_the_name_and_leaves_no_temp_files(self, tmp_path):
        ls = L.Landscape(np.linspace(0, 1, 4), None, {"loss": np.arange(4.0)})
        path = ls.save(tmp_path / "line")  # no suffix: nothing is appended
        assert path == tmp_path / "line" and path.is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["line"]

    def test_two_writers_of_one_path_do_not_collide(self, tmp_path):
        # A fixed "<name>.tmp" made concurrent writers truncate each other's file.
        from concurrent.futures import ThreadPoolExecutor

        lines = [
            L.Landscape(np.linspace(0, 1, 64), None, {"loss": np.full(64, float(k))})
            for k in range(8)
        ]
        target = tmp_path / "shared.npz"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda ls: ls.save(target), lines * 4))
        back = L.Landscape.load(target)
        assert back.loss[0] in range(8)
        np.testing.assert_array_equal(back.loss, np.full(64, back.loss[0]))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.npz"]

    def test_load_rejects_other_files(self, tmp_path):
        np.savez(tmp_path / "x.npz", a=np.zeros(3))
        with pytest.raises(ValueError, match="cannot read"):
            L.Landscape.load(tmp_path / "x.npz")
        (tmp_path / "bad.npz").write_bytes(b"not a zip")
        with pytest.raises(ValueError):
            L.Landscape.load(tmp_path / "bad.npz")

    def test_shape_validation(self):
        with pytest.raises(ValueError, match="shape"):
            L.Landscape(np.zeros(3), np.zeros(4), {"loss": np.zeros((4, 3))})
        with pytest.raises(ValueError, match="at least one"):
            L.Landscape(np.zeros(3), None, {})


class TestSharpness:
    def test_line_quadratic(self):
        a = np.linspace(-1, 1, 21)
        s = L.sharpness(L.Landscape(a, None, {"loss": 2.5 * a**2 - 0.3 * a + 1.0}))
        assert s.curvature[0] == pytest.approx(5.0)
        assert s.centre_value == pytest.approx(1.0)
        assert s.max_increase == pytest.approx(2.5 + 0.3)
        assert s.hessian is None

    @settings(max_examples=20, deadline=None)
    @given(
        haa=st.floats(-5, 5),
        hab=st.floats(-5, 5),
        hbb=st.floats(-5, 5),
        g=st.floats(-2, 2),
        radius=st.floats(1.0, 1.6),
    )
    def test_plane_quadratic_recovers_hessian(self, haa, hab, hbb, g, radius):
        ls = _plane(lambda a, b: 0.5 * haa * a**2 + hab * a * b + 0.5 * hbb * b**2 + g * a)
        s = L.sharpness(ls, radius=radius)
        np.testing.assert_allclose(s.hessian, [[haa, hab], [hab, hbb]], atol=1e-8)
        a, b = np.meshgrid(ls.alphas, ls.betas, indexing="ij")
        inside = np.hypot(a, b) <= radius * (1 + 1e-9)
        assert s.max_increase == pytest.approx(ls.loss[inside].max() - ls.loss[4, 3], abs=1e-9)

    def test_bad_input(self):
        ls = _plane(lambda a, b: a**2 + b**2)
        with pytest.raises(ValueError, match="metric"):
            L.sharpness(ls, metric="f1")
        with pytest.raises(ValueError, match="radius"):
            L.sharpness(ls, radius=-1.0)
        with pytest.raises(ValueError, match="too few"):
            L.sharpness(ls, radius=0.01)
        off = L.Landscape(np.linspace(1, 2, 5), None, {"loss": np.zeros(5)})
        with pytest.raises(ValueError, match="centre"):
            L.sharpness(off)


class TestPlots:
    def test_contour_has_direction_1_on_x(self):
        # The loss depends on alpha only: contour lines must be vertical (constant x).
        ls = _plane(lambda a, b: a + 0 * b)
        fig = L.plot_contour(ls, levels=5, filled=False)
        cs = next(c for c in fig.axes[0].collections if hasattr(c, "allsegs"))
        segs = [s for level in cs.allsegs for s in level if len(s)]
        assert segs
        for s in segs:
            assert np.ptp(s[:, 0]) < 1e-9 and np.ptp(s[:, 1]) > 1.0
        assert fig.axes[0].get_xlabel().startswith("alpha")

    def test_surface_and_line_and_trajectory(self, tmp_path):
        import matplotlib.pyplot as plt

        ls = _plane(lambda a, b: a**2 + b**2)
        fig = L.plot_surface(ls, path=tmp_path / "s.png")
        assert (tmp_path / "s.png").stat().st_size > 0
        # Each face of the surface is coloured by the mean of its four corner losses.
        surf = fig.axes[0].collections[0]
        v = ls.loss
        corners = (v[:-1, :-1] + v[1:, :-1] + v[:-1, 1:] + v[1:, 1:]) / 4
        faces = np.asarray(surf.get_array())
        np.testing.assert_allclose(np.sort(faces), np.sort(corners.ravel()))
        fig = L.plot_trajectory(
            ls, np.array([[0.8, 1.5], [0.2, 0.1]]), explained=np.array([0.7, 0.2])
        )
        assert "70.0%" in fig.axes[0].get_xlabel()
        line = L.Landscape(np.linspace(-1, 1, 5), None, {"loss": np.array([4, 1, 0.5, 1, 4.0])})
        fig, ax = plt.subplots()
        assert L.plot_line(line, ax=ax, log=True) is fig
        assert ax.get_yscale() == "log"
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), line.loss)
        with pytest.raises(ValueError, match="2-D"):
            L.plot_contour(line)
        with pytest.raises(ValueError, match="metric"):
            L.plot_contour(ls, metric="f1")

    def test_show_false_never_calls_show(self, monkeypatch):
        import matplotlib.pyplot as plt

        monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show called"))
        ls = _plane(lambda a, b: a**2 + b**2)
        ls.plot()
        ls.plot_surface()

    def test_to_html_is_self_contained(self, tmp_path):
        pytest.importorskip("plotly")
        ls = _plane(lambda a, b: a**2 + b**2)
        path = ls.to_html(tmp_path / "s.html")
        text = path.read_text()
        assert "<html" in text and "Plotly" in text
        # plotly.js is inlined (its source mentions URLs, but nothing is fetched on load).
        assert '<script src="http' not in text and "<script src='http" not in text
        assert len(text) > 1_000_000
