"""Sample pictures: the image grid's layout and pixel mapping, and the files written."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.data.toy import GaussianMixture2D
from ganlab.plots import image_grid, save_samples, save_scatter


def five_grey_images() -> torch.Tensor:
    """Five 1x2x2 images: one ramp, then constants (one of them out of range)."""
    images = torch.empty(5, 1, 2, 2)
    images[0, 0] = torch.tensor([[-1.0, -0.5], [0.5, 1.0]])
    for i, value in zip(range(1, 5), (1.0, 0.0, 5.0, -0.2), strict=True):
        images[i] = value
    return images


def test_image_grid_layout_and_pixels():
    grid = image_grid(five_grey_images(), pad=2)
    # 5 images -> ceil(sqrt 5) = 3 columns, 2 rows; each cell is 2 px plus 2 px of padding
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 4 + 2, 3 * 4 + 2, 1)
    expected = np.zeros((10, 14), np.uint8)
    # [-1, 1] -> [0, 255]: -0.5 -> 63.75 -> 64, 0.5 -> 191.25 -> 191
    expected[2:4, 2:4] = [[0, 64], [191, 255]]
    expected[2:4, 6:8] = 255  # 1.0
    expected[2:4, 10:12] = 128  # 0.0 -> 127.5, rounded half to even
    expected[6:8, 2:4] = 255  # 5.0 is clamped to 1
    expected[6:8, 6:8] = 102  # -0.2 -> 0.8 * 127.5 = 102
    # the sixth cell (row 1, column 2) and all padding stay black
    np.testing.assert_array_equal(grid[..., 0], expected)


def test_image_grid_keeps_channel_order():
    images = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, -1.0]]).view(2, 3, 1, 1)
    grid = image_grid(images, pad=1)
    assert grid.shape == (1 * 2 + 1, 2 * 2 + 1, 3)  # 2 images -> 2 columns, 1 row
    assert grid[1, 1].tolist() == [255, 0, 128]
    assert grid[1, 3].tolist() == [0, 255, 0]
    assert int(grid.sum()) == 255 + 128 + 255  # nothing outside the two pixels


def test_image_grid_without_padding_is_a_plain_mosaic():
    images = torch.tensor([-1.0, 1.0, 1.0, -1.0]).view(4, 1, 1, 1)
    grid = image_grid(images, pad=0)
    assert grid[..., 0].tolist() == [[0, 255], [255, 0]]


def _red(px: np.ndarray) -> np.ndarray:
    return (px[..., 0] > 180) & (px[..., 1] < 90) & (px[..., 2] < 90)


def _blue(px: np.ndarray) -> np.ndarray:  # the samples' blue, alone or blended on white
    return (px[..., 2] > 150) & (px[..., 2] - px[..., 0] > 60)


def _near(pixels: np.ndarray, xy: tuple[float, float], kind, reach: int = 9) -> int:
    """How many pixels of a kind (`_red`, `_blue`) lie within `reach` px of `xy`."""
    x, y = round(xy[0]), round(xy[1])
    return int(kind(pixels[y - reach:y + reach + 1, x - reach:x + reach + 1].astype(int)).sum())


def _mode_px(mode: torch.Tensor, modes: torch.Tensor) -> tuple[float, float]:
    # the picture's axes: [-span, span]^2 inside a 30 px margin, shifted down 12 px for the
    # two title lines (ganlab.plots.save_scatter)
    span = float(modes.abs().max()) * 1.5 + 0.5
    scale = (450 - 60) / (2 * span)
    return 30 + (float(mode[0]) + span) * scale, 450 - 30 - (float(mode[1]) + span) * scale + 12


def test_save_samples_scatter_for_2d_data(tmp_path):
    data = GaussianMixture2D("ring8", seed=0, device=torch.device("cpu"))
    samples, _ = data.sample(300)
    samples = torch.cat([samples, torch.tensor([[math.nan, 0.0]])])  # dropped, not fatal
    path = tmp_path / "plots" / "step_100.png"  # the folder does not exist yet
    save_samples(samples, data, path, "ring8  step 100", grid_size=64)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (450, 450)  # 4.5 in at 100 dpi
        assert img.mode == "RGBA"
        pixels = np.asarray(img.convert("RGB")).astype(int)
    # every mode holds samples: grey rings, no red; the samples are drawn
    assert _red(pixels).sum() == 0 and _blue(pixels).sum() > 20


def test_a_mode_without_samples_is_marked_red_and_samples_are_not_hidden(tmp_path):
    data = GaussianMixture2D("grid25", seed=0, device=torch.device("cpu"))
    samples, labels = data.sample(2000)
    kept = labels < 20  # G dropped the last five modes
    path = tmp_path / "step_100.png"
    held = save_scatter(samples[kept], data.modes, path, "grid25", data.std)
    assert held == [True] * 20 + [False] * 5
    # a sample just outside a dropped mode's 3-std disc does not count for it
    near = data.modes[24:25] + torch.tensor([[3.2 * data.std, 0.0]])
    assert save_scatter(near, data.modes, tmp_path / "near.png", "", data.std)[24] is False
    assert save_scatter(near, data.modes, tmp_path / "wide.png", "", data.std,
                        hq_std=4.0)[24] is True
    pixels = np.asarray(Image.open(path).convert("RGB"))
    for i, mode in enumerate(data.modes):
        at = _mode_px(mode, data.modes)
        if held[i]:  # its samples sit on top of its ring: blue at the centre, no red
            assert _near(pixels, at, _blue, reach=3) > 0
            assert _near(pixels, at, _red) == 0
        else:  # a red ring and cross where G puts nothing
            assert _near(pixels, at, _red) > 10


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_samples_grid_for_images(tmp_path, channels, mode):
    gen = torch.Generator().manual_seed(0)
    samples = torch.rand(10, channels, 4, 4, generator=gen) * 2 - 1
    path = tmp_path / "samples.png"
    save_samples(samples, SimpleNamespace(kind="image"), path, "ignored", grid_size=4)
    with Image.open(path) as img:
        # only the first grid_size=4 samples: a 2x2 grid of 4 px cells with 2 px padding
        assert img.size == (2 * 6 + 2, 2 * 6 + 2)
        assert img.mode == mode
        saved = np.asarray(img)
    expected = image_grid(samples[:4])
    np.testing.assert_array_equal(saved, expected[..., 0] if channels == 1 else expected)


def test_seed_pictures_label_rows_by_what_their_cells_differ_in():
    from ganlab.compare import seeds as mod

    one = ["data=grid25,smoothing=none,train.steps=9",
           "data=grid25,smoothing=one_sided,train.steps=9"]
    assert mod.row_labels(one) == ("smoothing", {one[0]: "none", one[1]: "one_sided"})
    two = ["data=grid25,model.width_ratio=1.0,train.d_steps=1",
           "data=grid25,model.width_ratio=2.0,train.d_steps=1",
           "data=grid25,model.width_ratio=1.0,train.d_steps=5"]
    rows, labels = mod.row_labels(two)
    assert rows == "width_ratio, d_steps"
    assert [labels[c] for c in two] == ["width_ratio=1.0, d_steps=1",
                                        "width_ratio=2.0, d_steps=1",
                                        "width_ratio=1.0, d_steps=5"]
    assert mod.row_labels(two, "train.d_steps")[1][two[2]] == "5"
    with pytest.raises(SystemExit, match=r"--key train.d_step: .*train.d_steps"):
        mod.row_labels(two, "train.d_step")  # a typo is named with the keys there are
    with pytest.raises(SystemExit, match="differ in nothing"):
        mod.row_labels([two[0], two[0]])


def test_seed_pictures_cut_each_scatter_to_its_whole_box(tmp_path):
    """The cut keeps the box's four frame lines and nothing of the title lines above it, at
    any size: a sample at the axes' edge is in the picture."""
    from ganlab.compare.seeds import frame
    from ganlab.plots import scatter_frame

    modes = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    span = float(modes.abs().max()) * 1.5 + 0.5
    for size in (450, 300):
        path = tmp_path / f"s{size}.png"
        save_scatter(torch.tensor([[0.0, -span]]), modes, path, "title", None, size=size)
        cut = frame(path)
        left, top, right, bottom = scatter_frame(size)
        assert cut.shape == (bottom - top + 1, right - left + 1, 3)
        black = (cut < 60).all(axis=2)
        for edge in (black[0], black[-1], black[:, 0], black[:, -1]):
            assert edge.mean() > 0.95  # a frame line, not cut off
        assert not black[1:-1, 1:-1].any()  # the title's text lies outside
        # the sample at y = -span sits on the bottom line, blue over the black frame
        blue = (cut[..., 2] > 150) & (cut[..., 0] < 120)
        assert blue[-4:].any()


def test_seed_pictures_refuse_what_they_cannot_draw(tmp_path, capsys):
    """A missing dir, or image runs (no modes), is refused by name before anything is
    re-scored; a damaged record is named and skipped, as the comparer skips it."""
    import json

    from ganlab.compare import seeds

    def record(cell, seed, metrics, status="completed"):
        run = tmp_path / "sweep" / cell / f"seed={seed}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(
            {"status": status, "seed": seed, "trick": {}, "comparability": {},
             "metrics": metrics, "history": []}))
        return run

    with pytest.raises(SystemExit):
        seeds.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert "nope is not a directory" in capsys.readouterr().err
    record("data=mnist,smoothing=none", 0, {"eval/fid": 30.0})
    record("data=mnist,smoothing=none", 1, {}, status="failed")
    (tmp_path / "sweep" / "data=mnist,smoothing=none" / "seed=2").mkdir()
    (tmp_path / "sweep" / "data=mnist,smoothing=none" / "seed=2" / "result.json").write_text("{")
    found = seeds.completed_runs(tmp_path / "sweep")
    assert [(r.name, rec["metrics"]) for r, rec in found.items()] == [
        ("seed=0", {"eval/fid": 30.0})]
    assert "skipped:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        seeds.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert "has no eval/modes_covered" in err and "2-D data" in err
    assert not (tmp_path / "x.png").exists()
