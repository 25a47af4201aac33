"""Every command, fed bad input as a hostile user would: each case must end with exit code 2, one
line on stderr that names the file or option, no traceback, and nothing at the output path."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from xelm.cli import main


@pytest.fixture(scope="module")
def env(branch_setup, lm_setup, tmp_path_factory):
    """Paths the cases refer to: good inputs, and broken ones."""
    root, seed, alloc = branch_setup
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "afile").write_text("not a folder")
    truncated = tmp / "truncated_model"
    shutil.copytree(seed, truncated)
    (truncated / "xelm_weights.json").unlink()  # as a model from elsewhere: no hashes
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    flipped = tmp / "flipped_model"
    shutil.copytree(seed, flipped)
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF  # one byte of the weights, the header intact
    (flipped / "model.safetensors").write_bytes(bytes(data))
    pickled = tmp / "pickled_model"
    shutil.copytree(seed, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "xelm_weights.json").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    bad_manifest = tmp / "bad_manifest"
    bad_manifest.mkdir()
    (bad_manifest / "manifest.json").write_text("{not json")
    shard_cut = tmp / "shard_cut"
    shutil.copytree(lm_setup / "corpus", shard_cut)
    shard = sorted((shard_cut / "en").glob("*.jsonl.zst"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    lang_gone = tmp / "lang_gone"
    shutil.copytree(lm_setup / "corpus", lang_gone)
    shutil.rmtree(lang_gone / "ja")
    bad_alloc = tmp / "bad_alloc"
    shutil.copytree(alloc, bad_alloc)
    (bad_alloc / "clusters.json").write_text(json.dumps({"format": "xelm-allocation/1"}))
    docs = "".join(
        json.dumps({"id": str(i), "lang": "de", "text": f"Text {i}"}) + "\n" for i in range(20)
    )
    files = {
        "no_text.jsonl": '{"lang": "en"}\n',
        "bad_lang.jsonl": '{"lang": "xx", "text": "t"}\n',
        "bad_json.jsonl": '{"lang": "en", "text": \n',
        "empty.jsonl": "",
        "ok.jsonl": docs,
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    (tmp / "latin1.jsonl").write_bytes(b'{"lang": "de", "text": "\xe4"}\n')
    (tmp / "bad.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    import gzip

    import zstandard

    (tmp / "trunc.jsonl.gz").write_bytes(gzip.compress(docs.encode())[:60])
    (tmp / "trunc.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(docs.encode())[:-4])
    (tmp / "bad.parquet").write_bytes(b"PAR1 garbage")
    (tmp / "bad.yaml").write_text("run_dir: [unclosed\n")
    (tmp / "no_answer.jsonl").write_text('{"context": "a", "options": ["b", "c"]}\n')
    (tmp / "unknown_key.yaml").write_text("tokenizer:\n  vocab: 10\n")
    from xelm.ensemble.build import build_ensemble

    ens = build_ensemble([seed, seed], tmp / "ens", router="uniform", allocation=alloc)
    no_expert = tmp / "no_expert_ens"
    shutil.copytree(ens, no_expert)
    shutil.rmtree(no_expert / "experts" / "01_seed")
    outside = build_ensemble([seed], tmp / "outside_ens", router="uniform")
    config = json.loads((outside / "config.json").read_text())
    config["experts"] = [os.path.relpath(seed, outside)]  # as a hostile download would
    (outside / "config.json").write_text(json.dumps(config))
    return {
        "corpus": str(lm_setup / "corpus"),
        "tok": str(lm_setup / "tok"),
        "seed": str(seed),
        "alloc": str(alloc),
        "tmp": str(tmp),
        "file": str(tmp / "afile"),
        "truncated": str(truncated),
        "pickled": str(pickled),
        "flipped": str(flipped),
        "outside_ens": str(outside),
        "ens": str(ens),
        "no_expert_ens": str(no_expert),
    }


# (case, arguments, what the one line must say); {out} is the output path, which must not exist
# afterwards (or, for {file}, still be the file it was)
CASES = [
    ("import: missing source", "data import {tmp}/missing.jsonl --out {out}", "no such file"),
    (
        "import: record without text",
        "data import {tmp}/no_text.jsonl --out {out}",
        "no_text.jsonl:1: record has no string field 'text'",
    ),
    (
        "import: unknown language",
        "data import {tmp}/bad_lang.jsonl --out {out}",
        "bad_lang.jsonl:1: field 'lang': unknown language code",
    ),
    ("import: invalid JSON", "data import {tmp}/bad_json.jsonl --out {out}", "invalid JSON"),
    ("import: empty file", "data import {tmp}/empty.jsonl --out {out}", "empty file"),
    ("import: not UTF-8", "data import {tmp}/latin1.jsonl --out {out}", "invalid UTF-8"),
    (
        "import: corrupt zst",
        "data import {tmp}/bad.jsonl.zst --out {out}",
        "bad.jsonl.zst: corrupt or truncated zst file",
    ),
    (
        "import: truncated gz",
        "data import {tmp}/trunc.jsonl.gz --out {out}",
        "trunc.jsonl.gz: corrupt or truncated gz file",
    ),
    (
        "import: truncated zst",
        "data import {tmp}/trunc.jsonl.zst --out {out}",
        "trunc.jsonl.zst: corrupt or truncated zst file",
    ),
    (
        "import: corrupt parquet",
        "data import {tmp}/bad.parquet --out {out}",
        "bad.parquet: not a readable Parquet file",
    ),
    ("import: --out is a file", "data import {tmp}/ok.jsonl --out {file}", "is a file"),
    (
        "import: --out under a file",
        "data import {tmp}/ok.jsonl --out {file}/x",
        "a part of the path is a file",
    ),
    (
        "import: validation share > 1",
        "data import {tmp}/ok.jsonl --out {out} --validation-fraction 1.5",
        "validation_fraction: input should be less than or equal to 1",
    ),
    (
        "import: negative test share",
        "data import {tmp}/ok.jsonl --out {out} --test-fraction -0.1",
        "test_fraction: input should be greater than or equal to 0",
    ),
    (
        "import: shares over 1",
        "data import {tmp}/ok.jsonl --out {out} --validation-fraction 0.6 --test-fraction 0.6",
        "validation_fraction + test_fraction must be at most 1",
    ),
    (
        "import: max docs 0",
        "data import {tmp}/ok.jsonl --out {out} --max-docs-per-lang 0",
        "max_docs_per_lang: input should be greater than or equal to 1",
    ),
    (
        "import: unknown option",
        "data import {tmp}/ok.jsonl --out {out} --colour blue",
        "No such option: --colour",
    ),
    ("show: not a corpus", "data show {tmp}", "not an xelm corpus"),
    ("show: corrupt manifest", "data show {tmp}/bad_manifest", "manifest.json: invalid JSON"),
    ("show: truncated shard", "data show {tmp}/shard_cut", "corpus shard changed since it was"),
    (
        "tokenizer: a language folder deleted",
        "tokenizer train --corpus {tmp}/lang_gone --out {out}",
        "ja: language folder missing",
    ),
    (
        "tokenizer: vocabulary too small",
        "tokenizer train --corpus {corpus} --out {out} --vocab-size 100",
        "vocab_size: input should be greater than or equal to 300",
    ),
    (
        "tokenizer: negative sample",
        "tokenizer train --corpus {corpus} --out {out} --sample-chars -5",
        "sample_chars: input should be greater than or equal to 1",
    ),
    (
        "tokenizer: negative alpha",
        "tokenizer train --corpus {corpus} --out {out} --alpha -1",
        "alpha: input should be greater than or equal to 0",
    ),
    ("tokenizer: not a corpus", "tokenizer train --corpus {tmp} --out {out}", "not an xelm corpus"),
    ("tokenizer: --out is a file", "tokenizer train --corpus {corpus} --out {file}", "is a file"),
    (
        "tokenizer show: missing folder",
        "tokenizer show ./no/such/tok --corpus {corpus}",
        "no such tokenizer folder",
    ),
    (
        "seed: less than a step",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --preset tiny --tokens 10",
        "less than one optimizer step",
    ),
    (
        "seed: micro batch 0",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set micro_batch_size=0",
        "micro_batch_size: input should be greater than or equal to 1",
    ),
    (
        "seed: negative lr",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set lr=-1",
        "lr: input should be greater than or equal to 0",
    ),
    (
        "seed: negative seq_len",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set seq_len=-8",
        "seq_len: input should be greater than or equal to 1",
    ),
    (
        "seed: unknown setting",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set learning_rate=1",
        "learning_rate: unknown key",
    ),
    (
        "seed: bad precision",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set precision=fp16",
        "precision: input should be 'auto', 'bf16' or 'fp32'",
    ),
    (
        "seed: unknown preset",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --preset huge --tokens 100000",
        "unknown model preset 'huge'",
    ),
    (
        "seed: missing tokenizer",
        "train seed --corpus {corpus} --tokenizer ./no/tok --out {out} --tokens 100000",
        "no such tokenizer folder",
    ),
    (
        "seed: --out under a file",
        "train seed --corpus {corpus} --tokenizer {tok} "
        "--out {file}/seed --preset tiny --tokens 100000 --set seq_len=32",
        "is a file",
    ),
    (
        "seed: --set without =",
        "train seed --corpus {corpus} --tokenizer {tok} --out {out} --set lr",
        "expected key.path=value",
    ),
    (
        "continue: missing model",
        "train continue --init ./no/model --corpus {corpus} --out {out} --tokens 10000",
        "no such model folder",
    ),
    (
        "continue: truncated weights",
        "train continue --init {truncated} --corpus {corpus} "
        "--out {out} --tokens 10000 --set seq_len=32",
        "cannot load a causal LM",
    ),
    (
        "continue: pickled weights",
        "train continue --init {pickled} --corpus {corpus} "
        "--out {out} --tokens 10000 --set seq_len=32",
        "no file named model.safetensors",
    ),
    (
        "experts: not an allocation",
        "train experts --seed {seed} --allocation {tmp} --out {out} --tokens 4096",
        "not an allocation",
    ),
    (
        "experts: broken allocation",
        "train experts --seed {seed} --allocation {tmp}/bad_alloc --out {out} --tokens 4096",
        "clusters.json",
    ),
    (
        "experts: missing seed",
        "train experts --seed ./no/seed --allocation {alloc} --out {out} --tokens 4096",
        "no such",
    ),
    (
        "experts: no workers",
        "train experts --seed {seed} --allocation {alloc} --out {out} --workers 0",
        "workers: input should be greater than or equal to 1",
    ),
    (
        "experts: unknown launcher",
        "train experts --seed {seed} --allocation {alloc} --out {out} --launcher slurm",
        "Invalid value for '--launcher'",
    ),
    (
        "experts: unknown split",
        "train experts --seed {seed} --allocation {alloc} --out {out} --split halves",
        "Invalid value for '--split'",
    ),
    (
        "experts: no tokens",
        "train experts --seed {seed} --allocation {alloc} --out {out} --tokens 0",
        "tokens: input should be greater than or equal to 1",
    ),
    (
        "experts: budget too small",
        "train experts --seed {seed} --allocation {alloc} --out {out} "
        "--tokens 100 --set seq_len=32",
        "is too small",
    ),
    (
        "dense: pickled seed",
        "train dense --seed {pickled} --corpus {corpus} --out {out} --tokens 4096 --set seq_len=32",
        "no file named model.safetensors",
    ),
    (
        "tfidf: k 0",
        "allocate tfidf --corpus {corpus} --out {out} --k 0",
        "k: input should be greater than or equal to 1",
    ),
    (
        "tfidf: ratio below 1",
        "allocate tfidf --corpus {corpus} --out {out} --max-ratio 0.5",
        "max_ratio: input should be greater than or equal to 1",
    ),
    (
        "tfidf: no SVD dims",
        "allocate tfidf --corpus {corpus} --out {out} --svd-dims 0",
        "svd_dims: input should be greater than or equal to 1",
    ),
    (
        "tfidf: missing corpus",
        "allocate tfidf --corpus {tmp}/nope --out {out}",
        "not an xelm corpus",
    ),
    ("tfidf: --out is a file", "allocate tfidf --corpus {corpus} --out {file} --k 2", "is a file"),
    (
        "typology: k above languages",
        "allocate typology --corpus {corpus} --out {out} --k 99",
        "--k 99: must be between 1 and the 3 training languages",
    ),
    (
        "typology: misspelt features",
        "allocate typology --corpus {corpus} --out {out} --features syntax_averag --k 2",
        "--features syntax_averag: unknown",
    ),
    (
        "typology: size factor below 1",
        "allocate typology --corpus {corpus} --out {out} --max-size-factor 0.5",
        "max_size_factor: input should be greater than or equal to 1",
    ),
    ("allocate show: not an allocation", "allocate show {tmp}", "not an allocation"),
    ("allocate show: broken record", "allocate show {tmp}/bad_alloc", "clusters.json"),
    (
        "eval: missing model",
        "eval ppl --model ./no/model --corpus {corpus}",
        "no such model folder",
    ),
    ("eval: not a corpus", "eval ppl --model {seed} --corpus {tmp}", "not an xelm corpus"),
    (
        "eval: negative max docs",
        "eval ppl --model {seed} --corpus {corpus} --max-docs -1",
        "Invalid value for '--max-docs'",
    ),
    (
        "eval: unknown split",
        "eval ppl --model {seed} --corpus {corpus} --split dev",
        "unknown split 'dev'",
    ),
    (
        "eval: truncated weights",
        "eval ppl --model {truncated} --corpus {corpus}",
        "cannot load a causal LM",
    ),
    (
        "eval: flipped bytes in the weights",
        "eval ppl --model {flipped} --corpus {corpus}",
        "the weights changed since xelm wrote them",
    ),
    (
        "merge: flipped bytes in an expert",
        "merge average --experts {flipped} --out {out}",
        "the weights changed since xelm wrote them",
    ),
    (
        "eval: an ensemble's expert outside its folder",
        "eval ppl --model {outside_ens} --corpus {corpus}",
        "seed lies outside the ensemble folder",
    ),
    (
        "eval: context 0",
        "eval ppl --model {seed} --corpus {corpus} --context 0",
        "Invalid value for '--context'",
    ),
    (
        "eval: a device torch does not know",
        "eval ppl --model {seed} --corpus {corpus} --device tpu",
        "device 'tpu': use auto, cpu or cuda",
    ),
    (
        "eval: fallback without one in the ensemble",
        "eval ppl --model {ens} --corpus {corpus} --fallback",
        "this ensemble has no fallback model",
    ),
    (
        "eval: the posterior over a whole prefix",
        "eval ppl --model {ens} --corpus {corpus} --router posterior --top-k 1 --route-on prefix",
        "route_on prefix: the posterior over a whole prefix",
    ),
    (
        "ensemble: missing fallback",
        "ensemble build --experts {seed} --out {out} --fallback ./no/seed",
        "not a model folder",
    ),
    (
        "ensemble: missing experts",
        "ensemble build --experts ./no/experts --out {out}",
        "no such expert folder",
    ),
    (
        "ensemble: unknown router",
        "ensemble build --experts {seed} --out {out} --router oracle",
        "Invalid value for '--router'",
    ),
    (
        "ensemble: prior without corpus",
        "ensemble build --experts {seed} --out {out} --router prior",
        "--router prior needs --prior-from",
    ),
    (
        "ensemble: top-k 0",
        "ensemble build --experts {seed} --out {out} --top-k 0",
        "top_k: input should be greater than or equal to 1",
    ),
    (
        "adapt: a language the corpus lacks",
        "adapt hmr --ensemble {ens} --corpus {corpus} --langs fr --out {out}",
        "no training pages in 'fr'; add the language to the corpus",
    ),
    (
        "adapt: a language the ensemble has",
        "adapt hmr --ensemble {ens} --corpus {corpus} --langs ja --out {out}",
        "already has ja (expert 1)",
    ),
    (
        "adapt: budget 0",
        "adapt hmr --ensemble {ens} --corpus {corpus} --langs ru --out {out} --tokens 0",
        "tokens: input should be greater than or equal to 1",
    ),
    (
        "adapt: unknown parent rule",
        "adapt hmr --ensemble {ens} --corpus {corpus} --langs ru --out {out} --parent nearest",
        "options: parent: use one of typology, posterior, seed or an expert's index",
    ),
    (
        "adapt: an expert missing",
        "adapt hmr --ensemble {no_expert_ens} --corpus {corpus} --langs ru --out {out}",
        "expert folder experts/01_seed is missing",
    ),
    (
        "adapt: not an ensemble",
        "adapt hmr --ensemble {seed} --corpus {corpus} --langs ru --out {out}",
        "not an X-ELM ensemble folder",
    ),
    (
        "lapt: no such model",
        "adapt lapt --model ./no/dense --corpus {corpus} --langs ru --out {out}",
        "no such model folder",
    ),
    (
        "merge: weights not numbers",
        "merge average --experts {seed} --out {out} --weights a,b",
        "--weights 'a,b': expected numbers",
    ),
    (
        "merge: weights not summing to one",
        "merge average --experts {seed} --experts {seed} --out {out} --weights 0.2,0.2",
        "summing to one",
    ),
    (
        "data icl: language not in the corpus",
        "data icl --corpus {corpus} --out {out} --langs xx",
        "no language xx in the corpus",
    ),
    (
        "data install-guide: a language it lacks",
        "data install-guide --out {out} --langs de,fi",
        "the installation guide has no fi",
    ),
    (
        "data debian-faq: a language it lacks",
        "data debian-faq --out {out} --langs de,fi",
        "the Debian FAQ has no fi",
    ),
    (
        "data stress: language not in the corpus",
        "data stress --corpus {corpus} --out {out} --langs xx",
        "no language xx in the corpus",
    ),
    (
        "data icl: no question can be built",
        "data icl --corpus {corpus} --out {out}",
        "no question could be built",
    ),
    (
        "eval icl: task line without an answer",
        "eval icl --model {seed} --tasks {tmp}/no_answer.jsonl --out {out}",
        "no_answer.jsonl:1: missing field answer",
    ),
    (
        "eval icl: shots not numbers",
        "eval icl --model {seed} --tasks {tmp}/no_answer.jsonl --shots one --out {out}",
        "--shots 'one'",
    ),
    (
        "eval icl: not a task source",
        "eval icl --model {seed} --tasks {file} --out {out}",
        "not a task source",
    ),
    ("run: missing config", "run {tmp}/nope.yaml --out {out}", "no such config file"),
    ("run: invalid YAML", "run {tmp}/bad.yaml --out {out}", "invalid YAML"),
    ("run: unknown key", "run {tmp}/unknown_key.yaml --out {out}", "tokenizer.vocab: unknown key"),
    ("run: --out is a file", "run configs/tiny.yaml --out {file}", "is a file"),
    (
        "sweep: k not numbers",
        "sweep configs/tiny.yaml --out {out} --k two",
        "expected numbers separated by commas",
    ),
    (
        "sweep: unknown method",
        "sweep configs/tiny.yaml --out {out} --methods kmeans",
        "--methods: unknown kmeans",
    ),
]


@pytest.mark.parametrize(("case", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    env, tmp_path, capsys, monkeypatch, case, args, message
):
    out = tmp_path / "out"
    argv = args.format(out=out, **env).split()
    monkeypatch.setattr(sys, "argv", ["xelm", *argv])
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])  # configs/ are relative to the repo
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert not out.exists()
    assert Path(env["file"]).read_text() == "not a folder"  # never replaced


def test_at_least_sixty_cases_cover_every_command():
    assert len(CASES) >= 60
    covered = {c[1].split()[0] for c in CASES}
    assert covered >= {
        "data",
        "tokenizer",
        "train",
        "allocate",
        "eval",
        "ensemble",
        "merge",
        "run",
        "sweep",
    }


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, where this machine lets us mount one."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or 'not root'})")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    small_disk, tmp_path, capsys, monkeypatch
):
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(8)) for _ in range(5000)]
    source = tmp_path / "big.jsonl"
    with source.open("w") as f:
        for i in range(400):  # ~4 MB of text that compresses poorly enough to fill 1 MiB
            text = " ".join(rng.choice(words) for _ in range(1200))
            f.write(json.dumps({"id": str(i), "lang": "de", "text": text}) + "\n")
    monkeypatch.setattr(
        sys, "argv", ["xelm", "data", "import", str(source), "--out", str(small_disk / "corpus")]
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: no space left on the device")
    assert list(small_disk.iterdir()) == []  # no corpus, no temporary folder
