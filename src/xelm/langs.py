"""Language codes: everything in xelm is labelled with a normalised BCP-47 tag.

Corpora arrive labelled in many ways (`en_US`, `eng`, `zh-CN`, mC4's `zh`): we normalise them
once, with `langcodes`, so that per-language figures from different sources line up, and so that
typology lookups (ISO 639-3, as URIEL wants) can be derived from the tag.
"""

from __future__ import annotations

from functools import lru_cache

import langcodes

from xelm.errors import XelmError


@lru_cache(maxsize=4096)
def normalize_lang(code: str, *, where: str = "") -> str:
    """Return the standard BCP-47 form of `code` (`en_US` -> `en-US`, `eng` -> `en`).

    Raises `XelmError` for codes that are not a known language, naming `where` they came from.
    """
    raw = code.strip()
    try:
        tag = langcodes.standardize_tag(raw.replace("_", "-"))
        lang = langcodes.Language.get(tag)
        ok = lang.is_valid() and lang.language not in (None, "und") and bool(lang.to_alpha3())
    except (ValueError, LookupError):
        ok = False
    if not ok:
        at = f"{where}: " if where else ""
        raise XelmError(
            f"{at}unknown language code {code!r}; use a BCP-47 tag such as 'en', 'zh-Hant', 'pt-BR'"
        )
    return tag


def iso639_3(tag: str) -> str:
    """ISO 639-3 code of a BCP-47 tag (what lang2vec/URIEL expects): `zh-Hant` -> `zho`."""
    return langcodes.Language.get(tag).to_alpha3()


def language_name(tag: str) -> str:
    """English display name, for tables and plots."""
    return langcodes.Language.get(tag).display_name()
