"""Watershed backend, colour deconvolution and per-nucleus features."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from PIL import Image
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse
from skimage.draw import polygon as fill_polygon

from shest.errors import InputError
from shest.segmentation.features import TileGeometry, measure_nuclei
from shest.segmentation.stain import StainVectors, estimate_stain_vectors, hematoxylin_od
from shest.segmentation.synthetic import SYNTHETIC_STAINS, Nucleus, render_he, scatter_nuclei
from shest.segmentation.watershed import (
    FALLBACK_THRESHOLD_OD,
    WatershedParams,
    WatershedSegmenter,
    estimate_threshold,
)
from conftest import data_file

MPP = 0.5


def calibrated(rgb: np.ndarray, params: WatershedParams | None = None) -> WatershedSegmenter:
    segmenter = WatershedSegmenter(params)
    segmenter.calibrate([rgb], MPP, estimate_stain_vectors(rgb))
    return segmenter


def render_concentrations(hematoxylin: np.ndarray, eosin: float = 0.45) -> np.ndarray:
    """Render a hematoxylin concentration map (OD units) and uniform eosin as uint8 RGB (Beer-Lambert)."""
    hematoxylin = ndi.gaussian_filter(hematoxylin.astype(np.float32), 0.7)
    od = (
        hematoxylin[..., None] * np.asarray(SYNTHETIC_STAINS.hematoxylin, dtype=np.float32)
        + np.float32(eosin) * np.asarray(SYNTHETIC_STAINS.eosin, dtype=np.float32)
    )
    return np.clip(256.0 * np.power(10.0, -od) - 1.0, 0, 255).round().astype(np.uint8)


def segment_fixed_threshold(rgb: np.ndarray, threshold_od: float, **overrides) -> np.ndarray:
    """Segment with a fixed threshold and a background radius wider than every test nucleus."""
    params = WatershedParams(background_radius_um=20.0, threshold_od=threshold_od, **overrides)
    segmenter = WatershedSegmenter(params)
    segmenter.calibrate([rgb], MPP, SYNTHETIC_STAINS)
    return segmenter.segment(rgb, MPP)


def matched_labels(truth: np.ndarray, predicted: np.ndarray, nucleus_count: int) -> dict[int, list[int]]:
    """Map each true nucleus to the predicted labels that cover most of its pixels."""
    result: dict[int, list[int]] = {}
    for index in range(1, nucleus_count + 1):
        pixels = predicted[truth == index]
        result[index] = sorted(set(pixels[pixels > 0].tolist()))
    return result


def test_stain_vectors_recovered_from_synthetic_he():
    rgb, _ = render_he((300, 300), scatter_nuclei((300, 300), MPP, seed=3))
    stains = estimate_stain_vectors(rgb)
    assert stains.source == "macenko"
    assert float(np.dot(stains.hematoxylin, SYNTHETIC_STAINS.hematoxylin)) > 0.99
    assert float(np.dot(stains.eosin, SYNTHETIC_STAINS.eosin)) > 0.99


def test_stain_vectors_fall_back_on_glass():
    glass = np.full((100, 100, 3), 245, dtype=np.uint8)
    assert estimate_stain_vectors(glass).source == "ruifrok"


def test_hematoxylin_od_higher_inside_nuclei():
    rgb, labels = render_he((200, 200), scatter_nuclei((200, 200), MPP, seed=4))
    od = hematoxylin_od(rgb, SYNTHETIC_STAINS)
    assert od[labels > 0].mean() > 0.6
    assert abs(od[labels == 0].mean()) < 0.15


def test_threshold_between_background_and_nuclei():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.03, 80_000), rng.normal(0.8, 0.1, 20_000)])
    threshold = estimate_threshold(values)
    assert 0.15 < threshold < 0.7


def test_threshold_without_positive_values_falls_back():
    assert estimate_threshold(np.zeros(1000)) == FALLBACK_THRESHOLD_OD


def test_separate_nuclei_each_found_once():
    nuclei = scatter_nuclei((400, 400), MPP, seed=1)
    rgb, truth = render_he((400, 400), nuclei)
    labels = calibrated(rgb).segment(rgb, MPP)
    matches = matched_labels(truth, labels, len(nuclei))
    found_once = sum(len(ids) == 1 for ids in matches.values())
    assert found_once >= 0.97 * len(nuclei)
    assert labels.max() <= len(nuclei) * 1.03


def test_touching_pair_split_in_two():
    # Two 9 µm nuclei whose edges overlap by 1 µm: one foreground blob with a neck.
    nuclei = [Nucleus(100, 100, 9, 9), Nucleus(116, 100, 9, 9), *scatter_nuclei((200, 200), MPP, seed=5)[20:30]]
    rgb, truth = render_he((200, 200), nuclei)
    labels = calibrated(rgb).segment(rgb, MPP)
    left, right = labels[100, 95], labels[100, 121]
    assert left > 0
    assert right > 0
    assert left != right


def pale_seam_image() -> np.ndarray:
    """Two nuclei (0.9 OD) forming one 15 x 11 µm ellipse, with no neck, joined by a 2 µm seam of 0.4 OD."""
    hematoxylin = np.full((100, 100), 0.06, dtype=np.float32)
    hematoxylin[ellipse(50, 50, 11, 15)] = 0.9
    seam = hematoxylin[:, 48:52]
    seam[seam > 0.5] = 0.4
    return render_concentrations(hematoxylin)


def test_pale_seam_splits_nuclei_without_neck():
    labels = segment_fixed_threshold(pale_seam_image(), 0.3)
    assert labels[50, 42] > 0
    assert labels[50, 58] > 0
    assert labels[50, 42] != labels[50, 58]


def test_pale_seam_kept_whole_without_level_splits():
    # The same image without the higher thresholds: the distance transform alone finds one nucleus.
    labels = segment_fixed_threshold(pale_seam_image(), 0.3, split_level_factors=())
    assert labels[50, 42] == labels[50, 58]


def test_faint_nucleus_outline_reaches_its_edge():
    # A 10 µm nucleus 0.36 OD above background, against a threshold of 0.3: the blurred
    # edge falls below the slide-wide threshold, but not below the nucleus's own.
    hematoxylin = np.full((100, 100), 0.06, dtype=np.float32)
    rows, cols = disk((50, 50), 10)
    hematoxylin[rows, cols] = 0.42
    labels = segment_fixed_threshold(render_concentrations(hematoxylin), 0.3)
    assert (labels > 0).sum() >= 0.9 * len(rows)
    assert (labels > 0).sum() <= 1.15 * len(rows)


def test_dark_nucleus_loses_pale_halo():
    # A 9 µm nucleus of 1.5 OD in a 1.5 µm halo of 0.25 OD, against a threshold of 0.2:
    # the slide-wide outline takes in the halo (area ratio about 1.5), the nucleus's own excludes most of it.
    hematoxylin = np.full((100, 100), 0.06, dtype=np.float32)
    hematoxylin[disk((50, 50), 12)] = 0.25
    rows, cols = disk((50, 50), 9)
    hematoxylin[rows, cols] = 1.5
    labels = segment_fixed_threshold(render_concentrations(hematoxylin), 0.2)
    assert (labels > 0).sum() < 1.4 * len(rows)


def test_size_filters_remove_specks_and_huge_blobs():
    speck = Nucleus(40, 40, 1.5, 1.5)  # about 1.8 µm², below the 6 µm² minimum
    huge = Nucleus(140, 140, 24, 22)  # about 415 µm², above the 200 µm² maximum
    normal = Nucleus(40, 140, 8, 7)
    rgb, _ = render_he((200, 200), [speck, huge, normal])
    # A fixed threshold at half the contrast keeps the outlines at the drawn size.
    labels = calibrated(rgb, WatershedParams(background_radius_um=20, threshold_od=0.4)).segment(rgb, MPP)
    assert labels[40, 40] == 0
    assert labels[140, 140] == 0
    assert labels[140, 40] > 0


def test_fixed_threshold_skips_estimate():
    rgb, _ = render_he((100, 100), scatter_nuclei((100, 100), MPP))
    segmenter = calibrated(rgb, WatershedParams(threshold_od=0.25))
    assert segmenter.threshold_od == 0.25
    assert segmenter.describe()["threshold_source"] == "parameter"


def test_blank_image_gives_no_labels():
    glass = np.full((64, 64, 3), 240, dtype=np.uint8)
    segmenter = calibrated(glass)
    assert segmenter.segment(glass, MPP).max() == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_area_um2": -1.0},
        {"split_h_um": 0.0},
        {"threshold_scale": 0.0},
        {"min_area_um2": 50.0, "max_area_um2": 40.0},
        {"split_level_factors": (0.9,)},
        {"outline_fraction": 1.0},
        {"outline_fraction": 0.0},
        {"outline_ring_um": 0.5},
        {"outline_reach_um": -1.0},
    ],
)
def test_invalid_parameters_rejected(overrides):
    with pytest.raises(InputError):
        WatershedParams(**overrides)


def test_outlines_match_label_masks():
    nuclei = scatter_nuclei((200, 300), MPP, seed=6)
    rgb, truth = render_he((200, 300), nuclei)
    labels = calibrated(rgb).segment(rgb, MPP)
    geometry = TileGeometry(x0=1000.0, y0=500.0, scale_x=0.5, scale_y=0.5, slide_mpp=0.25)
    columns = measure_nuclei(labels, hematoxylin_od(rgb, SYNTHETIC_STAINS), geometry)
    assert len(columns["x"]) == labels.max()
    for label, polygon, x, y in zip(columns["label"], columns["geometry"], columns["x"], columns["y"]):
        ring = np.asarray(polygon.exterior.coords)
        # Back to label-image pixel indices: undo the level-0 mapping, then -0.5 to pixel centres.
        cols = (ring[:, 0] - 1000.0) * 0.5 - 0.5
        rows = (ring[:, 1] - 500.0) * 0.5 - 0.5
        filled = np.zeros(labels.shape, dtype=bool)
        filled[fill_polygon(rows, cols, labels.shape)] = True
        mask = labels == label
        iou = (filled & mask).sum() / (filled | mask).sum()
        assert iou > 0.85, f"label {label}: outline IoU {iou:.2f}"
        centroid = polygon.centroid
        assert abs(centroid.x - x) < 2.0
        assert abs(centroid.y - y) < 2.0


def test_measurements_in_physical_units():
    labels = np.zeros((60, 60), dtype=np.int32)
    labels[10:30, 20:30] = 1  # 20 rows x 10 cols
    hematoxylin = np.where(labels > 0, 0.5, 0.0).astype(np.float32)
    geometry = TileGeometry(x0=100.0, y0=200.0, scale_x=0.5, scale_y=0.5, slide_mpp=0.25)
    columns = measure_nuclei(labels, hematoxylin, geometry)
    assert columns["area_um2"][0] == pytest.approx(200 * 0.5 * 0.5)
    assert columns["x"][0] == pytest.approx(100.0 + 25.0 / 0.5)
    assert columns["y"][0] == pytest.approx(200.0 + 20.0 / 0.5)
    assert columns["x_um"][0] == pytest.approx(columns["x"][0] * 0.25)
    assert columns["bbox_x0"][0] == pytest.approx(140.0)
    assert columns["bbox_y1"][0] == pytest.approx(260.0)
    assert columns["hematoxylin_od"][0] == pytest.approx(0.5)
    assert columns["solidity"][0] == pytest.approx(1.0, abs=0.01)
    # A 20 x 10 rectangle: eccentricity of its moment ellipse is sqrt(1 - (99/399)).
    assert columns["eccentricity"][0] == pytest.approx(np.sqrt(1 - 99 / 399), abs=1e-6)
    assert shapely.area(columns["geometry"][0]) == pytest.approx(200 / 0.25, rel=0.03)


def test_keep_function_drops_rejected_nuclei():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[5:10, 5:10] = 1
    labels[25:30, 25:30] = 2
    geometry = TileGeometry(0.0, 0.0, 1.0, 1.0, 0.5)

    def left_half(x, y, touches):
        return x < 20

    columns = measure_nuclei(labels, np.zeros((40, 40), np.float32), geometry, keep=left_half)
    assert columns["label"].tolist() == [1]


def test_split_level_factors_list_becomes_tuple():
    # Parameters read back from JSON metadata arrive as lists.
    assert WatershedParams(split_level_factors=[1.5, 2.0]).split_level_factors == (1.5, 2.0)


@pytest.fixture(scope="module")
def cpm15_scores() -> dict[str, float]:
    """Detection F1 at IoU >= 0.5 and aggregated Jaccard index of the defaults on the CPM-15 tile."""
    image_path = data_file("nuclei/cpm15/image01.png")
    mask_path = data_file("nuclei/cpm15/image01_mask.txt")
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    with open(mask_path, encoding="ascii") as handle:
        width, height = (int(v) for v in handle.readline().split())
        truth = np.loadtxt(handle, dtype=np.int32).reshape(height, width)
    labels = calibrated(rgb).segment(rgb, 0.5)
    truth_ids, predicted_ids = int(truth.max()), int(labels.max())
    # Joint histogram of the two label images: intersections, then unions and IoU.
    joint = np.bincount(truth.ravel() * (predicted_ids + 1) + labels.ravel(), minlength=(truth_ids + 1) * (predicted_ids + 1))
    joint = joint.reshape(truth_ids + 1, predicted_ids + 1)[1:, 1:].astype(float)
    truth_area = np.bincount(truth.ravel(), minlength=truth_ids + 1)[1:]
    predicted_area = np.bincount(labels.ravel(), minlength=predicted_ids + 1)[1:]
    union = truth_area[:, None] + predicted_area[None, :] - joint
    iou = joint / np.maximum(union, 1)
    matches = int((iou >= 0.5).sum())
    # AJI (Kumar et al., IEEE TMI 2017): each annotated nucleus with its best-IoU
    # prediction; predictions paired with none add their area to the union.
    best = iou.argmax(axis=1)
    paired = iou.max(axis=1) > 0
    rows = np.arange(truth_ids)
    intersection = joint[rows, best][paired].sum()
    union_sum = union[rows, best][paired].sum() + truth_area[~paired].sum()
    used = np.zeros(predicted_ids, dtype=bool)
    used[best[paired]] = True
    union_sum += predicted_area[~used].sum()
    return {"f1": 2 * matches / (truth_ids + predicted_ids), "aji": intersection / union_sum}


def test_cpm15_tile_detection_f1(cpm15_scores):
    # The defaults measure 0.759 here (0.726 before per-nucleus outlines and level splits).
    assert cpm15_scores["f1"] > 0.74


def test_cpm15_tile_aji(cpm15_scores):
    # The defaults measure 0.505 here.
    assert cpm15_scores["aji"] > 0.48


def test_describe_lists_parameters():
    description = WatershedSegmenter().describe()
    assert description["backend"] == "watershed"
    assert description["parameters"]["min_area_um2"] == WatershedParams().min_area_um2


def test_ruifrok_vectors_are_unit_length():
    stains = StainVectors.ruifrok()
    assert np.linalg.norm(stains.hematoxylin) == pytest.approx(1.0, abs=1e-4)
    assert np.linalg.norm(stains.eosin) == pytest.approx(1.0, abs=1e-4)
