"""cache_tags without a server: names of tag sets, validation, TTL jitter bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invalidator.cache_tags import CacheTagError, jittered_ttl, tag_set_key, validate_name


def test_tag_sets_are_named_with_a_cluster_hash_tag():
    assert tag_set_key("shop", "product:42") == "tag:{shop:product:42}"


@pytest.mark.parametrize(("value", "field", "words"), [
    ("", "tag", "empty"), ("a b", "tag", "whitespace"), ("a\nb", "tag", "whitespace"),
    ("a{b", "tag", "'{'"), ("x" * 257, "tag", "longer"), (7, "tag", "string"),
])
def test_bad_tags_are_refused_with_the_field_named(value, field, words):
    with pytest.raises(CacheTagError) as err:
        validate_name(value, "tag")
    assert err.value.field == field and words in str(err.value)


def test_bad_namespace_is_refused():
    with pytest.raises(CacheTagError) as err:
        tag_set_key("my shop", "t")
    assert err.value.field == "namespace"


@given(ttl=st.integers(1, 10**7), jitter=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_jitter_only_shortens_the_ttl_and_by_at_most_the_fraction(ttl, jitter, seed):
    applied = jittered_ttl(ttl, jitter, random.Random(seed))
    assert max(1, int(ttl * (1 - jitter))) <= applied <= ttl


def test_jitter_spreads_expirations():
    rng = random.Random(1)
    assert len({jittered_ttl(3600, 0.1, rng) for _ in range(50)}) > 10
    assert jittered_ttl(3600, 0, rng) == 3600


@pytest.mark.parametrize(("ttl", "jitter", "field"), [(0, 0.1, "ttl_s"), (1.5, 0.1, "ttl_s"), (True, 0.1, "ttl_s"),
                                                      (60, 1.0, "jitter"), (60, -0.1, "jitter")])
def test_bad_ttl_or_jitter_is_refused(ttl, jitter, field):
    with pytest.raises(CacheTagError) as err:
        jittered_ttl(ttl, jitter)
    assert err.value.field == field
