"""The page extraction and the translation filter, on hand-made pages (no packages needed)."""

from xelm.data.libreoffice import DemoFilter, page_paragraphs, script_share, translated_text

PAGE = """<!DOCTYPE html><html lang="ja"><head><title>T</title>
<script>var x = 1;</script></head><body>
<header><p>LibreOffice 7.4 ヘルプ</p></header><aside><div class="index-label">索引</div></aside>
<div id="DisplayArea">
  <h1>読み込みと保存オプション</h1>
  <p class="paragraph">全般的な読み込みと保存設定を指定します。</p>
  <p>Choose <span class="switchinline"><span hidden="true" class="MAC">LibreOffice - Preferences
  </span><span hidden="true" id="default1">Tools - Options</span></span> - Load/Save.</p>
  <table><tr><td><p>セル</p></td><td>bare cell</td></tr></table>
  <div class="bascode"><code>Sub Main
  End Sub</code></div>
  <p>In the General section, you can select default settings.</p>
</div>
<footer><div class="debug"><p>This page is: /text/shared/01.xhp</p></div></footer>
</body></html>""".encode()


def test_page_keeps_visible_content_paragraphs_only():
    assert page_paragraphs(PAGE) == [
        "読み込みと保存オプション",
        "全般的な読み込みと保存設定を指定します。",
        "Choose Tools - Options - Load/Save.",  # the default variant, not the hidden Mac one
        "セル",
        "bare cell",
        "In the General section, you can select default settings.",
    ]


def test_paragraphs_copied_from_english_are_dropped():
    paragraphs = page_paragraphs(PAGE)
    english = {
        "Choose Tools - Options - Load/Save.",
        "bare cell",
        "In the General section, you can select default settings.",
    }
    text, total, translated = translated_text(
        paragraphs, english, "Jpan", DemoFilter(min_translated_share=0.2, min_bytes=10)
    )
    assert text == "読み込みと保存オプション\n全般的な読み込みと保存設定を指定します。\nセル"
    assert translated == len(text) - 2  # newlines are not counted
    assert total > translated


def test_untranslated_or_wrong_script_pages_are_rejected():
    english_page = ["This is English.", "So is this."]
    filt = DemoFilter(min_bytes=1)
    assert translated_text(english_page, set(english_page), "Jpan", filt)[0] is None
    # not copied from English, but not Japanese either (e.g. another language's text)
    assert translated_text(["Ceci est du français."], set(), "Jpan", filt)[0] is None
    assert translated_text(["短い"], set(), "Jpan", DemoFilter(min_bytes=200))[0] is None


def test_script_share():
    assert script_share("日本語のテキスト", "Jpan") == 1.0
    assert script_share("Привет world", "Cyrl") == 6 / 11
    assert script_share("123", "Grek") == 0.0
