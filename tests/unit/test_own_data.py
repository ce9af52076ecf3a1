"""Own data in: column maps, object-store locations, and the synthetic retail export."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from models.data.datasets import (
    apply_column_map,
    is_object_store,
    load_column_map,
    parse_column_map,
    read_canonical_dir,
    read_raw_tables,
)
from models.data.synthetic import RETAIL_COLUMN_MAP, generate_retail, write_retail_export


def test_flat_entries_apply_to_every_table_and_sections_override():
    mapping = parse_column_map({"user_id": "customer_id", "item_id": "sku", "domain": "category",
                                "impressions": {"timestamp": "shown_at"}, "interactions": {"timestamp": "at"}})
    assert mapping["interactions"] == {"user_id": "customer_id", "item_id": "sku", "timestamp": "at"}
    assert mapping["items"] == {"item_id": "sku", "domain": "category"}
    assert mapping["users"] == {"user_id": "customer_id"}
    assert mapping["impressions"] == {"user_id": "customer_id", "item_id": "sku", "timestamp": "shown_at"}


@pytest.mark.parametrize(("spec", "message"), [
    ({"orders": {"user_id": "c"}}, "unknown table"),
    ({"customer": "customer_id"}, "not canonical columns"),
    ({"items": {"price": "p"}}, "items.price is not a canonical column"),
    ({"user_id": ["a", "b"]}, "must name one column"),
    ({"user_id": "id", "item_id": "id"}, "takes several canonical columns from ['id']"),
    (["user_id"], "a column map is a mapping"),
])
def test_a_wrong_column_map_names_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_column_map(spec)


def test_apply_renames_and_leaves_absent_columns_to_the_contract():
    tables = {"interactions": pl.DataFrame({"customer_id": ["c1"], "sku": ["s1"], "user_id": ["stale"]}),
              "items": pl.DataFrame({"sku": ["s1"], "category": ["garden"]}), "users": None}
    mapping = parse_column_map({"user_id": "customer_id", "item_id": "sku", "domain": "category",
                                "title": "product_name"})
    out = apply_column_map(tables, mapping)
    assert out["interactions"].columns == ["user_id", "item_id"]  # the mapped column wins over a same-named one
    assert out["interactions"]["user_id"].to_list() == ["c1"]
    assert out["items"].columns == ["item_id", "domain"] and out["users"] is None  # no product_name: left alone
    assert apply_column_map(tables, None) is tables


def test_object_store_locations():
    assert is_object_store("s3://bucket/prefix") and is_object_store("gs://b/p") and is_object_store("az://c/p")
    assert not is_object_store("/data/shop") and not is_object_store(Path("s3:/x"))


def test_retail_export_reads_back_to_the_generated_tables(tmp_path: Path):
    retail = generate_retail(n_customers=120, products_per_category=20, seed=3)
    again = generate_retail(n_customers=120, products_per_category=20, seed=3)
    assert retail.interactions.equals(again.interactions) and retail.items.equals(again.items)  # seeded

    sizes = dict(retail.interactions.join(retail.items, on="item_id").group_by("domain").len().iter_rows())
    assert set(sizes) == {"grocery", "electronics", "home", "beauty", "toys", "garden"}
    assert sizes["garden"] < 0.5 * min(v for k, v in sizes.items() if k != "garden")  # the new category is small
    assert retail.impressions is not None and retail.impressions["propensity"].is_between(0, 1).all()

    out = write_retail_export(retail, tmp_path / "shop")
    raw = read_raw_tables(out)
    assert "customer_id" in raw["interactions"].columns and raw["interactions"]["ordered_at"].dtype == pl.String
    assert load_column_map(out / "columns.yaml") == parse_column_map(RETAIL_COLUMN_MAP)
    back = read_canonical_dir(out, columns=load_column_map(out / "columns.yaml"))
    key = ["user_id", "item_id", "timestamp"]
    assert back.interactions.sort(key).equals(retail.interactions.sort(key))  # ISO datetimes parse back exactly
    assert back.items.select("item_id", "domain", "title").equals(retail.items.select("item_id", "domain", "title"))
    assert back.items["description"].str.starts_with("notes of ").all()


def test_item_texts_use_the_description_when_there_is_one():
    from models.data.text import item_texts

    items = pl.DataFrame({"item_id": ["a"], "domain": ["d"], "title": ["Eco Rake 1"],
                          "genres": pl.Series([None], dtype=pl.String), "description": ["notes of jade"]})
    assert item_texts(items) == ["Eco Rake 1 |  | notes of jade"]
    assert item_texts(items.drop("description")) == ["Eco Rake 1 | "]  # MovieLens-like tables: unchanged


def test_a_data_landed_object_store_path_becomes_the_url():
    from flows.config import OnboardConfig
    from flows.deployments import data_landed_parameters

    config = OnboardConfig(target_domain="garden")
    landed = data_landed_parameters(config)["config"]
    landed = {**landed, "target_domain": "garden",
              "data": {**landed["data"], "path": "s3://warehouse/shop/2026-11-28", "columns": ""}}
    parsed = OnboardConfig.model_validate(landed)  # what the refresh run receives once Prefect fills the template
    assert parsed.data.url == "s3://warehouse/shop/2026-11-28" and parsed.data.path is None
    assert parsed.data.dataset == "2026-11-28" and parsed.data.columns is None
    local = OnboardConfig.model_validate({**landed, "data": {**landed["data"], "path": "/data/shop"}})
    assert local.data.path == Path("/data/shop") and local.data.url is None and local.data.dataset == "shop"
