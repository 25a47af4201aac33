import pytest

from xelm.errors import XelmError
from xelm.langs import iso639_3, normalize_lang


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("eng", "en"),
        ("en_US", "en-US"),
        ("zh-Hant", "zh-Hant"),
        ("pt-br", "pt-BR"),
        ("deu", "de"),
    ],
)
def test_codes_are_normalised_to_bcp47(raw, tag):
    assert normalize_lang(raw) == tag


@pytest.mark.parametrize("raw", ["xx", "klingon", "", "und"])
def test_unknown_codes_are_rejected_with_their_origin(raw):
    with pytest.raises(XelmError, match=r"data\.jsonl:3: unknown language code"):
        normalize_lang(raw, where="data.jsonl:3")


def test_iso639_3_for_typology_lookups():
    assert [iso639_3(t) for t in ("en", "zh-Hant", "ja", "eu")] == ["eng", "zho", "jpn", "eus"]
