"""`xelm data icl`: the tasks of `xelm.icl.tasks` as JSONL files plus lm-evaluation-harness task
YAMLs that read them (no hub access needed), with a manifest.

Layout of the output folder:
    manifest.json                       sizes, options, chance accuracy per task and language
    <task>/<lang>.test.jsonl            the questions
    <task>/<lang>.fewshot.jsonl         the demonstrations (from other test pages)
    lm_eval/xelm_<task>_<lang>.yaml     one lm-eval task each (`--include_path OUT/lm_eval`; they
                                        name the files where the folder was built: `xelm eval
                                        icl` writes its own from where the folder is now)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.icl.tasks import DELIMITERS, PARTS, Blocks, IclSpec, build_lang, topic_of
from xelm.paths import atomic_dir, writable

FORMAT = "xelm-icl/1"
MANIFEST = "manifest.json"
TASK_DIR = "lm_eval"


def task_name(task: str, lang: str) -> str:
    return f"xelm_{task}_{lang}"


def task_yaml(name: str, files: dict[str, Path], delimiter: str, tags: list[str]) -> dict:
    """An lm-eval multiple-choice task over local JSONL files with `context`, `options` and
    `answer` fields (ours, or a user's own). Scored by `acc` and `acc_norm` (log-likelihood per
    byte of the option: options of different lengths compete fairly)."""
    return {
        "task": name,
        "tag": tags,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: str(p.resolve()) for split, p in files.items()}},
        "test_split": "test",
        "fewshot_split": "fewshot" if "fewshot" in files else "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",
        "doc_to_choice": "options",
        "doc_to_target": "answer",
        "target_delimiter": delimiter,
        "fewshot_delimiter": "\n\n",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1},
    }


def write_task(folder: Path, name: str, files: dict[str, Path], delimiter: str, tag: str) -> Path:
    """`folder/<name>.yaml`: the lm-eval task of `task_yaml` (lm-eval's `--include_path`)."""
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = task_yaml(name, files, delimiter, [tag])
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def libreoffice_blocks(langs: list[str], pages: dict[str, set[str]]) -> dict[str, Blocks]:
    """Paragraphs with their ids of the given pages, per language (English included), read from
    the LibreOffice help packages (downloaded once into the user's cache)."""
    from xelm.data.debian import download_debs
    from xelm.data.libreoffice import REFERENCE, package_folder, read_pages

    needed = [REFERENCE, *[lang for lang in langs if lang != REFERENCE]]
    folders = {lang: package_folder(lang) for lang in needed}
    debs = download_debs([f"libreoffice-help-{f}" for f in folders.values()])
    english_pages = set().union(*pages.values()) if pages else set()
    out = {}
    for lang in needed:
        wanted = english_pages if lang == REFERENCE else pages[lang]
        deb = debs[f"libreoffice-help-{folders[lang]}"]
        out[lang] = dict(read_pages(deb, folders[lang], wanted))
    return out


def build_icl(
    corpus_dir: str | Path,
    out: str | Path,
    spec: IclSpec | None = None,
    langs: list[str] | None = None,
    log=print,
) -> dict:
    """Write the tasks of every language of the corpus (or `langs`) into `out`; the manifest."""
    import langcodes

    spec = spec or IclSpec()
    out = writable(out)
    corpus = Corpus(corpus_dir)
    langs = langs or corpus.langs
    unknown = [lang for lang in langs if lang not in corpus.langs]
    if unknown:
        raise XelmError(
            f"{corpus.path}: no language {', '.join(unknown)} in the corpus "
            f"(it has {', '.join(corpus.langs)})"
        )
    docs = {lang: list(corpus.documents("test", [lang])) for lang in langs}
    empty = [lang for lang, d in docs.items() if not d]
    if empty:
        raise XelmError(f"{corpus.path}: no test documents for {', '.join(empty)}")
    tasks = list(spec.tasks)
    sources = [s.get("name", "") for s in corpus.manifest.get("sources", [])]
    applies = {
        "continuation": True,
        # paragraph ids are read from the help packages the corpus was built from
        "translation": any(name.startswith("libreoffice-help-") for name in sources),
        "topic": all(topic_of(d.id) for d in docs[langs[0]]),
    }
    skipped = [t for t in tasks if not applies[t]]
    if skipped:
        log(
            f"  not built: {', '.join(skipped)} (translation needs a corpus built from the "
            "LibreOffice help packages, topic its page paths text/<app>/...)"
        )
        tasks = [t for t in tasks if applies[t]]
    if not tasks:
        raise XelmError(
            f"{corpus.path}: none of the tasks applies to this corpus; use continuation"
        )
    blocks = None
    if "translation" in tasks:
        log("  reading paragraph ids of the test pages (LibreOffice help packages)")
        blocks = libreoffice_blocks(langs, {lang: {d.id for d in docs[lang]} for lang in langs})

    spec = spec.replace(tasks=tasks)
    manifest: dict = {"format": FORMAT, "corpus": str(corpus.path), "spec": spec.to_dict()}
    manifest["tasks"] = {t: {"delimiter": DELIMITERS[t], "langs": {}} for t in tasks}
    with atomic_dir(out) as tmp:
        for lang in langs:
            pair = None if blocks is None else (blocks["en"], blocks.get(lang, {}))
            name = langcodes.Language.get(lang).display_name()
            for task, parts in build_lang(lang, docs[lang], spec, pair, name).items():
                files = {}
                for part in PARTS:
                    files[part] = tmp / task / f"{lang}.{part}.jsonl"
                    _write_jsonl(files[part], [e.to_dict() for e in parts[part]])
                test = parts["test"]
                if not test:
                    log(f"  {task} {lang}: no examples (too few suitable test pages)")
                    continue
                options = Counter(len(e.options) for e in test).most_common(1)[0][0]
                answers = Counter(e.answer for e in test) if task != "topic" else None
                labels = Counter(e.options[e.answer] for e in test)
                manifest["tasks"][task]["langs"][lang] = {
                    "test": len(test),
                    "fewshot": len(parts["fewshot"]),
                    "options": options,
                    "chance": 1 / options,
                    # the score of always answering the most frequent label (topic) or position
                    "majority": max((answers or labels).values()) / len(test),
                }
                final = {p: out / task / f"{lang}.{p}.jsonl" for p in PARTS}
                name = task_name(task, lang)
                write_task(tmp / TASK_DIR, name, final, DELIMITERS[task], f"xelm_{task}")
            log(f"  {lang}: " + ", ".join(_sizes(manifest, lang)))
        if not any(entry["langs"] for entry in manifest["tasks"].values()):
            raise XelmError(
                f"{corpus.path}: no question could be built from its test pages (continuation "
                "needs pages of two or more paragraphs, one per line; topic needs LibreOffice "
                "help page ids); use another corpus, or no icl section"
            )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _sizes(manifest: dict, lang: str) -> list[str]:
    return [
        f"{task} {entry['langs'][lang]['test']}"
        for task, entry in manifest["tasks"].items()
        if lang in entry["langs"]
    ]
