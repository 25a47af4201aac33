"""Few-shot scoring through lm-evaluation-harness: our tasks, a user's JSONL or lm-eval YAML.

Every (shots, demonstration seed) is one `lm_eval.simple_evaluate` call with the model loaded
once; 0-shot has no demonstrations and runs once. Dense models and seeds go through lm-eval's
`HFLM`, ensembles through `xelm.icl.lm.XELMLM` (the same class with the mixture's
log-likelihoods), so both see the same prompts, truncation and metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import yaml

from xelm.errors import XelmError
from xelm.icl.build import MANIFEST, task_name, write_task
from xelm.icl.tasks import PARTS

METRICS = ("acc", "acc_norm")


@contextmanager
def task_sources(sources: list[str | Path]):
    """(include paths, task names, {task: (task, lang)}) of `xelm data icl` folders, a user's
    JSONL files (`context`, `options`, `answer` per line; demonstrations drawn from the same
    file, never the question itself) and lm-eval task YAMLs with local data."""
    include, names, meta = [], [], {}
    with tempfile.TemporaryDirectory(prefix="xelm-icl-") as tmp:
        for source in map(Path, sources):
            if source.is_dir() and (source / MANIFEST).exists():
                manifest = json.loads((source / MANIFEST).read_text())
                for task, entry in manifest["tasks"].items():
                    for lang, sizes in entry["langs"].items():
                        # the folder's own lm_eval/ YAMLs name the files where it was built:
                        # written afresh from where it is now, a moved run still finds them
                        files = {p: source / task / f"{lang}.{p}.jsonl" for p in PARTS}
                        name = task_name(task, lang)
                        write_task(Path(tmp), name, files, entry["delimiter"], f"xelm_{task}")
                        names.append(name)
                        meta[name] = (task, lang, sizes["chance"])
            elif source.suffix == ".jsonl" and source.is_file():
                chance = _check_jsonl(source)
                name = f"user_{source.stem}"
                write_task(Path(tmp), name, {"test": source}, " ", "xelm_user")
                names.append(name)
                meta[name] = (source.stem, None, chance)
            elif source.suffix in (".yaml", ".yml") and source.is_file():
                task = (yaml.safe_load(source.read_text()) or {}).get("task")
                if not isinstance(task, str):
                    raise XelmError(f"{source}: an lm-eval task YAML needs a `task: NAME` key")
                include.append(str(source.parent))
                names.append(task)
                meta[task] = (task, None, None)  # chance unknown
            else:
                raise XelmError(
                    f"{source}: not a task source; give an `xelm data icl` folder, a .jsonl "
                    "file (context, options, answer) or an lm-eval task .yaml"
                )
        if any(Path(tmp).iterdir()):
            include.append(tmp)
        yield include, names, meta


def _check_jsonl(path: Path) -> float:
    """Check a user's task file; its chance accuracy (mean of 1 / options)."""
    chances = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise XelmError(f"{path}:{n}: not JSON ({e.msg})") from None
        missing = [k for k in ("context", "options", "answer") if k not in row]
        if missing:
            raise XelmError(f"{path}:{n}: missing field {', '.join(missing)}")
        if not isinstance(row["options"], list) or not 0 <= row["answer"] < len(row["options"]):
            raise XelmError(f"{path}:{n}: `answer` must index the `options` list")
        chances.append(1 / len(row["options"]))
    if not chances:
        raise XelmError(f"{path}: no questions")
    return sum(chances) / len(chances)


def load_lm(
    model_path: str | Path,
    router: str | None = None,
    top_k: int | None = None,
    batch_size: int = 8,
    precision: str = "auto",
    trust_external_experts: bool = False,
    fallback: bool = False,
    window: int | None = None,
):
    """An lm-eval model for an HF causal LM folder (HFLM) or an X-ELM ensemble (XELMLM)."""
    import torch

    from xelm.evaluate import is_ensemble
    from xelm.models import resolve_device, use_bf16
    from xelm.paths import hf_ref

    hf_ref(model_path)
    device = resolve_device("auto")  # the GPU when there is one
    bf16 = use_bf16(precision, device)
    common = {
        "device": str(device),
        "batch_size": batch_size,
        "mixed_precision_dtype": torch.bfloat16 if bf16 else None,
    }
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if is_ensemble(model_path):
        from xelm.icl.lm import XELMLM

        return XELMLM(
            str(model_path),
            router=router,
            top_k=top_k,
            trust_external_experts=trust_external_experts,
            fallback=fallback,
            window=window,
            **common,
        )
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)  # the window it was trained with
    return HFLM(pretrained=str(model_path), max_length=config.max_position_embeddings, **common)


def evaluate_icl(
    lm,
    sources: list[str | Path],
    shots: list[int],
    seeds: int = 5,
    limit: int | None = None,
    quiet: bool = True,
) -> dict:
    """{task name: {task, lang, chance, shots: {n: {acc: [per seed], acc_norm: [...],
    examples}}}}."""
    # the tasks read local files: never look for them on the hub (set before datasets loads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if quiet:  # lm-eval and datasets draw a progress bar per task and split
        datasets.disable_progress_bars()

    with task_sources(sources) as (include, names, meta):
        manager = TaskManager(include_path=include)
        out = {
            name: {"task": task, "lang": lang, "chance": chance, "shots": {}}
            for name, (task, lang, chance) in meta.items()
        }
        for n in shots:
            for seed in range(seeds if n > 0 else 1):
                with contextlib.redirect_stderr(io.StringIO()) if quiet else nullcontext():
                    res = simple_evaluate(
                        model=lm,
                        tasks=names,
                        num_fewshot=n,
                        fewshot_random_seed=seed,
                        task_manager=manager,
                        limit=limit,
                        verbosity="ERROR",
                        bootstrap_iters=0,
                        log_samples=False,
                    )
                for name in names:
                    scores = res["results"][name]
                    cell = out[name]["shots"].setdefault(
                        str(n), {m: [] for m in METRICS} | {"examples": 0}
                    )
                    for m in METRICS:
                        cell[m].append(scores[f"{m},none"])
                    cell["examples"] = res["n-samples"][name]["effective"]
    return out
