"""The data-loader benchmark's section runs end to end and reports every row it promises (its
figures are measurements: only their presence and sign are checked, never a speed)."""
import math

import pytest

from pet.bench.data_benchmark import (
    DIGITS, IMAGE_FOLDER, PET, PLAIN, WORKER_COUNTS, data_loader_section, format_data_loader,
)
from tools.write_image_folder import write_image_folder

pytestmark = pytest.mark.slow  # DataLoader workers and two short train_net jobs: seconds


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def section():
    return data_loader_section(True, lambda out: write_image_folder(out, 0.2, 0))


def test_each_data_set_and_worker_count_compares_ours_with_the_plain_loader(section):
    rows = section["loaders"]
    assert [(r["dataset"], r["workers"]) for r in rows] == [
        (name, workers) for name in (IMAGE_FOLDER, DIGITS) for workers in WORKER_COUNTS]
    for r in rows:
        for key in ("pet_images_per_s", "plain_images_per_s", "ratio", "pet_startup_s", "plain_startup_s"):
            assert positive(r[key]), (key, r)
        assert math.isclose(r["slower"], 1.0 - r["ratio"])
        assert len(r["pet_rounds"]) == len(r["plain_rounds"]) == len(r["round_ratios"]) == section["rounds"]
        assert all(positive(v) for v in r["pet_rounds"] + r["plain_rounds"])


def test_the_item_costs_name_where_the_time_goes(section):
    assert [r["dataset"] for r in section["item_costs"]] == [IMAGE_FOLDER, DIGITS]
    for r in section["item_costs"]:
        for key in ("dataset_us", "seeded_us", "collate_us", "checked_collate_us"):
            assert positive(r[key]), (key, r)
        assert math.isclose(r["seeding_us"], r["seeded_us"] - r["dataset_us"])


def test_the_ready_batch_cost_is_reported_for_both_loaders(section):
    rows = section["ready_batch"]
    assert [(r["loader"], r["workers"]) for r in rows] == [(PET, 2), (PLAIN, 2)]
    assert all(positive(r["next_median_s"]) and positive(r["next_mean_s"]) for r in rows)


def test_train_nets_wait_for_data_is_reported_with_and_without_workers(section):
    rows = section["data_wait"]
    assert [r["workers"] for r in rows] == [2, 0]
    for r in rows:
        assert r["iterations"] > 0
        assert positive(r["step_s"]) and positive(r["median_step_s"])
        # A wait can be 0.0 to the timer's resolution when the batch was ready.
        assert r["data_time_mean_s"] >= 0 and r["data_time_median_s"] >= 0
        assert r["data_time_max_s"] >= r["data_time_median_s"]
        assert math.isclose(r["median_fraction"], r["data_time_median_s"] / r["step_s"])


def test_the_section_prints_as_four_tables(section):
    text = format_data_loader(section)
    assert "plain" in text and "seeding" in text and "data_time" in text
    assert text.count(IMAGE_FOLDER) == 4 and text.count(DIGITS) == 3 and "ready" in text
