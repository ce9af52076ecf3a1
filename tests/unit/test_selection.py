"""Source selection: profiles, matching across catalogues, text similarity, the combined score and content init."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.data.synthetic import generate_multidomain
from models.data.text import (
    centroid_similarity,
    embed_minilm,
    hashed_tfidf,
    item_texts,
    minilm_available,
    nearest_coverage,
)
from models.factors import FactorModel
from models.selection.candidates import prepare_source, source_profile, target_profile
from models.selection.profiles import (
    DomainProfile,
    behaviour_distances,
    behaviour_stats,
    build_profile,
    gini,
    item_keys,
    user_support,
)
from models.selection.similarity import (
    DEFAULT_WEIGHTS,
    PROBE,
    SIGNALS,
    kendall_tau,
    rank_candidates,
    settle_finalists,
)
from models.selection.sources import ALL_DOMAINS, ALL_OTHERS, source_candidates
from models.split import split_target_domain
from models.transfer.alignment import SOURCE_NAMESPACE, align_source, item_mapping
from models.transfer.init import ItemText, content_directions, transfer_init


def test_gini_known_answers():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n - 1) / n for one item holding all
    assert gini(np.array([])) == 0.0


def test_behaviour_distances_zero_for_identical_and_known_for_disjoint_ratings():
    frame = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "rating": [5.0, 5.0, 5.0]})
    stats = behaviour_stats(frame, n_items=2)
    assert stats["rating_hist"][5] == 1.0 and sum(stats["activity_hist"]) == pytest.approx(1.0)
    same = behaviour_distances(stats, stats)
    assert all(v == pytest.approx(0.0) for v in same.values())
    other = behaviour_stats(frame.with_columns(pl.lit(1.0).alias("rating")), n_items=2)
    assert behaviour_distances(stats, other)["rating_distance"] == pytest.approx(1.0)


def test_item_keys_match_grouplens_and_recbole_layouts():
    grouplens = pl.DataFrame({"item_id": ["1", "2"], "title": ["Toy Story (1995)", "Heat  (1995)"]})
    recbole = pl.DataFrame({"item_id": ["Toy Story (1995)", "Heat (1995)"], "title": ["Toy Story", "Heat"]})
    assert item_keys(grouplens).to_list() == item_keys(recbole).to_list() == ["toy story (1995)", "heat (1995)"]


def test_item_mapping_is_one_to_one_and_respects_the_mode():
    source = pl.DataFrame({"item_id": ["s1", "s2", "s3"], "key": ["a", "a", "b"]})
    target = pl.DataFrame({"item_id": ["t1", "t2", "s3"], "key": ["a", "c", "b"]})
    by_title = item_mapping(source, target, how="title")
    assert by_title.height == 2 and by_title["target_id"].is_unique().all() and by_title["source_id"].is_unique().all()
    assert dict(zip(by_title["target_id"], by_title["source_id"], strict=True))["s3"] == "s3"
    assert item_mapping(source, target, how="id").rows() == [("s3", "s3")]
    assert item_mapping(source, target, how="none").is_empty()


def _model(users: list[str], items: list[str], dim: int = 2) -> FactorModel:
    rng = np.random.default_rng(0)
    return FactorModel(np.array(users, dtype=object), np.array(items, dtype=object),
                       rng.normal(size=(len(users), dim)).astype(np.float32),
                       rng.normal(size=(len(items), dim)).astype(np.float32), np.zeros(len(items), dtype=np.float32))


def test_align_source_renames_matched_items_and_namespaces_unshared_users():
    source = _model(["1", "2"], ["m1", "m2"])
    mapping = pl.DataFrame({"source_id": ["m1"], "target_id": ["T1"]})
    aligned = align_source(source, mapping, shared_users=False)
    assert aligned.model.item_ids.tolist() == ["T1", SOURCE_NAMESPACE + "m2"]
    assert aligned.model.user_ids.tolist() == [SOURCE_NAMESPACE + "1", SOURCE_NAMESPACE + "2"]
    assert aligned.matched_items == 1
    np.testing.assert_array_equal(aligned.model.item_factors, source.item_factors)
    assert align_source(source, mapping, shared_users=True).model.user_ids.tolist() == ["1", "2"]


def test_hashed_tfidf_is_deterministic_and_measures_overlap():
    a, b = hashed_tfidf(["red quest zinc", "blue atlas"], ["red quest zinc", "green saga"])
    assert float(a[0] @ b[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(a[1] @ b[1]) == pytest.approx(0.0, abs=1e-6)
    again, _ = hashed_tfidf(["red quest zinc", "blue atlas"], ["red quest zinc", "green saga"])
    np.testing.assert_array_equal(a, again)
    assert nearest_coverage(b, a) == pytest.approx(0.5, abs=1e-5)
    assert 0.0 < centroid_similarity(a, b) < 1.0


def test_item_texts_join_title_and_genres():
    items = pl.DataFrame({"item_id": ["x"], "title": ["Alien"], "genres": ["Horror|Sci-Fi"]})
    assert item_texts(items) == ["Alien | Horror, Sci-Fi"]


def _rows(probes: dict[str, float], coverage: dict[str, float] | None = None) -> list[dict]:
    coverage = coverage or {}
    return [{"name": n, PROBE: p, "user_coverage": coverage.get(n, 1.0), "user_jaccard": 0.1, "item_coverage": 0.0,
             "content_coverage": 0.5, "behaviour_distance": 0.2} for n, p in probes.items()]


def test_rank_candidates_probe_dominates_and_names_the_decisive_signal():
    table, rationale, signal = rank_candidates(_rows({"a": 0.10, "b": 0.12, "c": 0.05}))
    assert table["name"].to_list() == ["b", "a", "c"] and table["rank"].to_list() == [1, 2, 3]
    assert signal == "probe_relative" and "b scores" in rationale
    assert table.row(0, named=True)["score"] == pytest.approx(sum(
        w * (1.0 if s == "probe_relative" else table.row(0, named=True)[s]) for s, w in DEFAULT_WEIGHTS.items()))


def test_rank_candidates_breaks_a_probe_tie_with_the_other_signals():
    _, _, signal = rank_candidates(_rows({"a": 0.10, "b": 0.10}, coverage={"a": 0.5, "b": 0.9}))
    assert signal == "user_coverage"
    table, _, _ = rank_candidates(_rows({"a": 0.10, "b": 0.10}, coverage={"a": 0.5, "b": 0.9}))
    assert table["name"][0] == "b"


def test_rank_candidates_raises_on_nothing_or_unknown_weights():
    with pytest.raises(ValueError, match="no source candidate"):
        rank_candidates([])
    with pytest.raises(ValueError, match="unknown signals"):
        rank_candidates(_rows({"a": 0.1}), {"nonsense": 1.0})


def test_kendall_tau_known_answers():
    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert kendall_tau(["a", "b", "c"], ["a", "c", "b"]) == pytest.approx(1 / 3)


def test_settle_finalists_needs_the_margin():
    assert settle_finalists(["a", "b"], {"a": 0.100, "b": 0.101}, margin=0.02) == "a"
    assert settle_finalists(["a", "b"], {"a": 0.100, "b": 0.110}, margin=0.02) == "b"
    assert settle_finalists(["a", "b"], {"a": 0.100, "b": 0.101}, margin=0.0) == "b"


def test_source_candidates_combinations_and_other_datasets():
    stats = pl.DataFrame({"domain": ["books", "movies", "music", "games"]})
    within = source_candidates(stats, "games", candidates=None, top_single=2, all_others=True,
                               combinations=("music + books",))
    assert within == {"books": ["books"], "movies": ["movies"], "music+books": ["music", "books"],
                      ALL_OTHERS: ["books", "movies", "music"]}
    across = source_candidates(stats, "games", candidates=None, top_single=1, all_others=True, same_dataset=False)
    assert across == {"books": ["books"], "games": ["games"], ALL_DOMAINS: ["books", "movies", "music", "games"]}
    with pytest.raises(ValueError, match="not other domains"):
        source_candidates(stats, "games", candidates=None, top_single=1, all_others=False, combinations=("games+x",))


def test_profile_round_trip(tmp_path):
    frame = pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [4.0, 2.0]})
    items = pl.DataFrame({"item_id": ["x", "y"], "title": ["X (1999)", "Y"], "genres": ["A", "B"]})
    profile = build_profile(frame, items, dataset="d", domains=["A", "B"],
                            embed=("fake", lambda texts: np.eye(len(texts), 3)))
    loaded = DomainProfile.load(profile.save(tmp_path / "p"))
    assert loaded.user_ids.tolist() == ["a", "b"] and loaded.items.equals(profile.items)
    assert loaded.stats == profile.stats and loaded.embedder == "fake"
    np.testing.assert_allclose(loaded.embeddings, profile.embeddings)
    assert loaded.meta["content_centroid"] == pytest.approx([0.5, 0.5, 0.0])


@pytest.mark.skipif(not minilm_available(), reason="the text extra (MiniLM) is not installed")
def test_minilm_vectors_of_a_catalogue_embedded_before_are_read_back_from_the_cache(tmp_path):
    texts = ["Toy Story (1995) Animation|Children's|Comedy", "Heat (1995) Action|Crime|Thriller"]
    fresh = embed_minilm(texts, cache=tmp_path)
    assert fresh.shape == (2, 384) and np.allclose(np.linalg.norm(fresh, axis=1), 1.0, atol=1e-5)
    [stored] = tmp_path.glob("minilm-*.npy")
    np.testing.assert_array_equal(np.load(stored, allow_pickle=False), fresh)
    marked = np.full((2, 384), 0.5, dtype=np.float32)  # what the file holds is what comes back: no model ran
    np.save(stored, marked, allow_pickle=False)
    np.testing.assert_array_equal(embed_minilm(texts, cache=tmp_path), marked)
    assert len(list(tmp_path.glob("minilm-*.npy"))) == 1
    assert not np.array_equal(embed_minilm(texts[::-1], cache=tmp_path), marked[::-1])  # another list, its own file
    stored.write_bytes(b"half a file")  # damaged: embedded again and rewritten
    np.testing.assert_allclose(embed_minilm(texts, cache=tmp_path), fresh, atol=1e-6)
    np.testing.assert_allclose(np.load(stored, allow_pickle=False), fresh, atol=1e-6)


def test_content_directions_take_the_nearest_source_items():
    source_vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=np.float32)
    text = ItemText(source=np.eye(3, dtype=np.float32), target=np.array([[0.0, 1.0, 0.0]], dtype=np.float32))
    direction = content_directions(source_vectors, text, np.array([0]), k=1)
    np.testing.assert_allclose(direction[0], source_vectors[1] - source_vectors.mean(axis=0), atol=1e-6)


def test_transfer_init_with_nothing_shared_fills_items_from_content():
    source = _model(["s1", "s2"], ["a", "b", "c"], dim=2)
    text = ItemText(source=np.eye(3, dtype=np.float32), target=np.eye(3, dtype=np.float32)[[2, 0]])
    init = transfer_init(source, user_ids=np.array(["t1"], dtype=object), item_ids=np.array(["x", "y"], dtype=object),
                         train_users=np.array([0]), train_items=np.array([0]), text=text)
    assert init.items_from_content == 2 and init.content_scale == 1.0
    centred = source.item_factors - source.item_factors.mean(axis=0)
    np.testing.assert_allclose(init.item_factors[0], centred[2], atol=1e-4)  # x reads like c
    without = transfer_init(source, user_ids=np.array(["t1"], dtype=object),
                            item_ids=np.array(["x", "y"], dtype=object), train_users=np.array([0]),
                            train_items=np.array([0]))
    assert not without.item_factors.any()


def test_transfer_init_computes_content_only_for_items_that_take_it():
    """Every new item with a known user takes the users' mean: the text changes nothing and no content scale is
    fitted; an item no known user touched takes its content vector (its text reads like source item c)."""
    rng = np.random.default_rng(1)
    source = _model([f"s{k}" for k in range(40)], ["a", "b", "c"], dim=3)
    text = ItemText(source=np.eye(3, dtype=np.float32), target=np.eye(3, dtype=np.float32)[[0, 1, 2]])
    user_ids, item_ids = source.user_ids, np.array(["x", "y", "z"], dtype=object)
    # x's audience likes a, y's likes b (their texts read like a and b); z: no interaction
    scores = source.user_factors @ source.item_factors.T
    fans = [np.argsort(-(scores[:, k] - scores.mean(axis=1)))[:10] for k in (0, 1)]
    users = np.concatenate([rng.choice(fans[k], size=200) for k in (0, 1)])
    items = np.repeat([0, 1], 200)

    def init(**options):
        return transfer_init(source, user_ids=user_ids, item_ids=item_ids, train_users=users, train_items=items,
                             **options)

    without, with_text = init(), init(text=text)
    assert with_text.item_scale > 0 and with_text.items_from_content == 1 and with_text.content_scale > 0
    np.testing.assert_array_equal(with_text.item_factors[:2], without.item_factors[:2])
    centred = source.item_factors - source.item_factors.mean(axis=0)
    cosine = with_text.item_factors[2] @ centred[2] / np.linalg.norm(with_text.item_factors[2]) / np.linalg.norm(
        centred[2])
    assert cosine > 0.9
    both = np.concatenate([users, users[:50]]), np.concatenate([items, np.full(50, 2)])  # now z has users too
    all_known = [transfer_init(source, user_ids=user_ids, item_ids=item_ids, train_users=both[0],
                               train_items=both[1], text=t) for t in (None, text)]
    np.testing.assert_array_equal(all_known[1].item_factors, all_known[0].item_factors)
    assert all_known[1].content_scale == 0.0 and all_known[1].items_from_content == 0

def test_prepare_source_across_datasets_by_title():
    """Shared items, disjoint users: same items (same seed), other people with colliding ids."""
    source = generate_multidomain(n_users=60, items_per_domain=20, seed=0, item_seed=5, user_prefix="u")
    target = generate_multidomain(n_users=60, items_per_domain=20, seed=1, item_seed=5, user_prefix="u")
    split = split_target_domain(target.interactions, target.items, domain="movies", fraction=1.0, seed=0)
    profile = source_profile(source.interactions, source.items, dataset="a", domains=["movies", "books"],
                             cutoffs=None, embedder="hashed")
    ids = profile.items["item_id"].to_numpy().astype(object)
    model = _model(profile.user_ids.tolist(), ids.tolist(), dim=4)
    ready = prepare_source(model, profile, split, target_profile(split, "b"), item_match="title", shared_users=False,
                           embedder="hashed")
    assert ready.signals["user_coverage"] == 0.0  # same user ids, but other people
    assert ready.signals["item_coverage"] == 1.0 and ready.signals["matched_items"] == 20
    assert ready.signals["content_coverage"] == pytest.approx(1.0, abs=1e-5)
    assert ready.text is not None and ready.text.target.shape[0] == split.catalogue.height
    assert set(SIGNALS) - {PROBE} <= set(ready.signals)  # every documented signal but the probe


def test_user_support_counts_source_evidence_per_target_user():
    frame = pl.DataFrame({"user_id": ["a"] * 3 + ["b"], "item_id": ["x", "y", "z", "x"], "rating": [4.0] * 4})
    items = pl.DataFrame({"item_id": ["x", "y", "z"], "title": ["X", "Y", "Z"], "genres": ["A", "A", "A"]})
    profile = build_profile(frame, items, dataset="d", domains=["A"])
    assert profile.user_counts.tolist() == [3, 1]
    # a: log2(1 + 3) = 2, b: log2(1 + 1) = 1, c unknown: 0
    assert user_support(profile, ["a", "b", "c"]) == pytest.approx(1.0)
    assert user_support(profile, []) == 0.0
    older = DomainProfile(profile.dataset, profile.domains, profile.user_ids, profile.items, profile.stats)
    # without counts: every known user gets the profile's mean log2 activity (bins 0 and 1 -> 0.5 and 1.5)
    assert user_support(older, ["a", "b"]) == pytest.approx(1.0)


def test_candidates_markdown_marks_candidates_not_fine_tuned():
    from tasks.report import candidates_markdown

    rows = [{"rank": 2, "name": "b", "score": 0.5, "zero_shot_val_ndcg_at_10": 0.1, "val_ndcg_at_10": None},
            {"rank": 1, "name": "a", "score": 1.0, "zero_shot_val_ndcg_at_10": 0.2, "val_ndcg_at_10": 0.25}]
    lines = candidates_markdown(rows).splitlines()
    assert lines[2].startswith("| 1 | a | 1.0000 | 0.2000 |") and "0.2500" in lines[2]
    assert lines[3].startswith("| 2 | b |") and lines[3].count("| - ") == 7


def test_user_support_outweighs_a_slightly_better_probe():
    rows = _rows({"single": 0.100, "all-others": 0.097})
    for row, support in zip(rows, (4.0, 6.0), strict=True):
        row["user_support"] = support
    table, rationale, signal = rank_candidates(rows)
    assert table["name"][0] == "all-others" and signal == "support_relative" and "user support" in rationale
    rows[0][PROBE] = 0.2  # a much better probe still wins
    assert rank_candidates(rows)[0]["name"][0] == "single"
