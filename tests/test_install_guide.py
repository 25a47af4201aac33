"""The Debian installation guide as an out-of-domain test set."""

import shutil

import pytest

from xelm.data.install_guide import install_guide_documents, page_text
from xelm.errors import XelmError

PAGE = b"""<html><body>
<div class="navheader"><table><tr><td>3.4. Minimale Hardware-Anforderungen</td></tr></table></div>
<div class="sect1"><h2>3.4. Minimale   Hardware-Anforderungen</h2>
<p>Sobald Sie Informationen \xc3\xbcber die Hardware haben, pr\xc3\xbcfen Sie sie.</p>
<pre class="screen"># apt install firmware-linux
  mount /dev/sda1 /mnt</pre>
<ul><li><p>Ohne Desktop</p></li></ul>
</div>
<div class="navfooter"><p>Zur\xc3\xbcck</p></div>
</body></html>"""


def test_page_text_keeps_the_content_and_the_commands_and_drops_navigation():
    assert page_text(PAGE).splitlines() == [
        "3.4. Minimale Hardware-Anforderungen",
        "Sobald Sie Informationen über die Hardware haben, prüfen Sie sie.",
        "# apt install firmware-linux",
        " mount /dev/sda1 /mnt",
        "Ohne Desktop",
    ]


def test_a_language_the_guide_lacks_is_a_clear_error():
    with pytest.raises(XelmError, match="has no fi, eu"):
        list(install_guide_documents(["de", "fi", "eu"]))


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_the_real_guide_has_the_same_pages_in_every_language():
    docs = list(install_guide_documents(["en", "ja"]))
    pages = {lang: {d.id for d in docs if d.lang == lang} for lang in ("en", "ja")}
    assert len(pages["en"]) > 60 and len(pages["en"] & pages["ja"]) > 0.9 * len(pages["ja"])
    ja = [d for d in docs if d.lang == "ja"]
    assert sum(not c.isascii() for d in ja for c in d.text) > 0.5 * sum(len(d.text) for d in ja)
