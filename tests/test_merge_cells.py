"""`shest merge-cells`: determinism, byte identity, duplicates and bad inputs."""

from __future__ import annotations

import gzip
import json
import uuid

import geopandas as gpd
import numpy as np
import pytest
import shapely

from shest.cli.main import main
from shest.errors import InputError
from shest.segmentation.features import MEASUREMENT_COLUMNS
from shest.segmentation.merge import merge_chunk_tables
from shest.segmentation.table import TABLE_FORMAT, build_table, read_cell_table, write_cell_table

CHUNKS = 3
TISSUE_MM2 = 0.25


def metadata_for(chunk: int, slide: str = "slide.svs") -> dict:
    return {
        "format": TABLE_FORMAT,
        "sample": "S1",
        "slide": slide,
        "mpp": 0.5,
        "segmentation_mpp": 0.5,
        "segmentation": {"backend": "watershed", "parameters": {"min_area_um2": 6.0}},
        "plan": {"tiles": 6, "chunks": CHUNKS, "tissue_area_mm2": TISSUE_MM2},
        "chunk": chunk,
        "chunks_included": [chunk],
        "version": "test",
    }


def nucleus_columns(centres: list[tuple[float, float]], tile_id: int, radius: float = 6.0) -> dict[str, np.ndarray]:
    n = len(centres)
    columns = {name: np.zeros(n) for name in MEASUREMENT_COLUMNS}
    columns["x"] = np.array([c[0] for c in centres], dtype=float)
    columns["y"] = np.array([c[1] for c in centres], dtype=float)
    columns["area_um2"] = np.full(n, np.pi * radius**2 * 0.25)
    columns["tile_id"] = np.full(n, tile_id, dtype=np.int64)
    columns["geometry"] = np.array([shapely.Point(c).buffer(radius, quad_segs=4) for c in centres], dtype=object)
    return columns


def write_chunk(directory, chunk: int, centres, tile_id: int, **metadata_changes):
    path = directory / f"S1.chunk-{chunk:04d}.cells.parquet"
    metadata = metadata_for(chunk)
    metadata.update(metadata_changes)
    write_cell_table(path, build_table(nucleus_columns(centres, tile_id)), metadata)
    return path


@pytest.fixture
def chunk_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for chunk in range(CHUNKS):
        # Chunk c contains nuclei with 100 c <= x < 100 (c + 1). Ties in y test the x ordering.
        xs = rng.uniform(100 * chunk + 10, 100 * chunk + 90, 8).round(1)
        ys = np.repeat(rng.uniform(10, 200, 4).round(1), 2)
        paths.append(write_chunk(tmp_path, chunk, list(zip(xs, ys)), tile_id=chunk))
    return paths


def run_merge(paths, outdir, *extra) -> int:
    return main(["merge-cells", *map(str, paths), "--outdir", str(outdir), *extra])


def output_bytes(outdir, gzip_output: bool = False) -> dict[str, bytes]:
    suffix = ".geojson.gz" if gzip_output else ".geojson"
    names = ["S1.cells.parquet", f"S1.nuclei{suffix}", "S1_segmentation_mqc.tsv"]
    return {name: (outdir / name).read_bytes() for name in names}


def test_input_order_does_not_change_bytes(chunk_files, tmp_path):
    assert run_merge(chunk_files, tmp_path / "a") == 0
    assert run_merge(list(reversed(chunk_files)), tmp_path / "b") == 0
    assert run_merge([chunk_files[1], chunk_files[2], chunk_files[0]], tmp_path / "c") == 0
    first = output_bytes(tmp_path / "a")
    assert output_bytes(tmp_path / "b") == first
    assert output_bytes(tmp_path / "c") == first


def test_gzip_outputs_identical_on_rerun(chunk_files, tmp_path):
    assert run_merge(chunk_files, tmp_path / "a", "--geojson-gzip") == 0
    assert run_merge(chunk_files[::-1], tmp_path / "b", "--geojson-gzip") == 0
    assert output_bytes(tmp_path / "a", True) == output_bytes(tmp_path / "b", True)
    with gzip.open(tmp_path / "a" / "S1.nuclei.geojson.gz", "rt", encoding="utf-8") as handle:
        assert json.load(handle)["type"] == "FeatureCollection"


def test_cell_ids_follow_y_then_x(chunk_files):
    table, metadata = merge_chunk_tables(chunk_files)
    assert table["cell_id"].tolist() == list(range(1, 8 * CHUNKS + 1))
    order = np.lexsort((table["x"].to_numpy(), table["y"].to_numpy()))
    assert order.tolist() == list(range(len(table)))
    assert metadata["chunks_included"] == [0, 1, 2]
    assert metadata["chunk"] is None


def test_chunk_given_twice_is_deduplicated(chunk_files):
    once, _ = merge_chunk_tables(chunk_files)
    twice, _ = merge_chunk_tables([*chunk_files, chunk_files[1]])
    assert len(twice) == len(once)


def test_overlapping_nuclei_of_two_tiles_removed(tmp_path):
    first = write_chunk(tmp_path, 0, [(50.0, 50.0), (150.0, 50.0)], tile_id=0)
    # (51, 50.5) overlaps (50, 50) with IoU > 0.5. (160, 50) overlaps (150, 50) with IoU < 0.5.
    second = write_chunk(tmp_path, 1, [(51.0, 50.5), (160.0, 50.0)], tile_id=1)
    third = write_chunk(tmp_path, 2, [(300.0, 300.0)], tile_id=2)
    table, _ = merge_chunk_tables([third, second, first])
    assert len(table) == 4
    remaining_centres = sorted(zip(table["x"], table["y"]))
    assert (51.0, 50.5) not in remaining_centres
    assert (160.0, 50.0) in remaining_centres


def test_missing_chunk_is_an_error(chunk_files, tmp_path, capsys):
    assert run_merge(chunk_files[:2], tmp_path / "out") == 1
    assert "Chunks [2]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "S1.cells.parquet").exists()


def test_missing_chunk_allowed_on_request(chunk_files, tmp_path):
    assert run_merge(chunk_files[:2], tmp_path / "out", "--allow-missing-chunks") == 0
    table, metadata = read_cell_table(tmp_path / "out" / "S1.cells.parquet")
    assert len(table) == 16
    assert metadata["chunks_included"] == [0, 1]


def test_chunks_of_different_slides_rejected(chunk_files, tmp_path):
    other = write_chunk(tmp_path / "other", 2, [(10.0, 10.0)], tile_id=5, slide="another.svs")
    with pytest.raises(InputError, match="slide"):
        merge_chunk_tables([chunk_files[0], chunk_files[1], other])


def test_non_cell_table_rejected(tmp_path):
    bogus = tmp_path / "bogus.cells.parquet"
    bogus.write_text("not parquet")
    with pytest.raises(InputError, match="not a Parquet file"):
        merge_chunk_tables([bogus])


def test_missing_input_file_rejected(tmp_path):
    with pytest.raises(InputError, match="not found"):
        merge_chunk_tables([tmp_path / "absent.cells.parquet"])


def test_geojson_features_for_qupath(chunk_files, tmp_path):
    assert run_merge(chunk_files, tmp_path) == 0
    data = json.loads((tmp_path / "S1.nuclei.geojson").read_text(encoding="utf-8"))
    features = data["features"]
    assert data["type"] == "FeatureCollection"
    assert len(features) == 8 * CHUNKS
    assert {f["properties"]["objectType"] for f in features} == {"detection"}
    ids = [f["id"] for f in features]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(value).version == 5 for value in ids)
    assert features[0]["geometry"]["type"] == "Polygon"
    frame = gpd.read_file(tmp_path / "S1.nuclei.geojson")
    assert len(frame) == len(features)


def test_multiqc_table_counts_and_density(chunk_files, tmp_path):
    assert run_merge(chunk_files, tmp_path) == 0
    text = (tmp_path / "S1_segmentation_mqc.tsv").read_text(encoding="utf-8")
    assert "# id: shest_segmentation" in text
    header, row = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    values = dict(zip(header, row))
    assert values["Sample"] == "S1"
    assert int(values["nuclei"]) == 8 * CHUNKS
    assert float(values["nuclei_per_mm2"]) == pytest.approx(8 * CHUNKS / TISSUE_MM2, rel=1e-4)


def test_sample_override_names_outputs(chunk_files, tmp_path):
    assert run_merge(chunk_files, tmp_path, "--sample", "renamed") == 0
    _, metadata = read_cell_table(tmp_path / "renamed.cells.parquet")
    assert metadata["sample"] == "renamed"
