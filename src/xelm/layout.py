"""Where everything of a run lives: the one map of a run directory (pipeline, report, sweep and
CLI all read it here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def udhr(self) -> Path:
        return self.root / "udhr"

    @property
    def install_guide(self) -> Path:
        return self.root / "install_guide"

    @property
    def debian_faq(self) -> Path:
        return self.root / "debian_faq"

    @property
    def stress(self) -> Path:
        return self.root / "stress"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def seed(self) -> Path:
        return self.root / "seed"

    @property
    def dense(self) -> Path:
        return self.root / "dense"

    def allocation(self, name: str) -> Path:
        return self.root / "allocation" / name

    def experts(self, allocation: str) -> Path:
        return self.root / "experts" / allocation

    def ensemble(self, allocation: str) -> Path:
        return self.root / "ensembles" / allocation

    def merged(self, allocation: str) -> Path:
        return self.root / "merged" / allocation

    def adapted(self, allocation: str, rule: str) -> Path:
        """The allocation's X-ELM grown by the new languages (parents chosen by `rule`)."""
        return self.root / "adapted" / f"{allocation}-{rule}"

    def adapted_experts(self, allocation: str, rule: str) -> Path:
        return self.root / "adapted" / f"{allocation}-{rule}.experts"

    def lapt(self, lang: str) -> Path:
        return self.root / "lapt" / lang

    @property
    def icl_tasks(self) -> Path:
        """`xelm data icl` output: the few-shot tasks of the run's corpus."""
        return self.root / "icl" / "tasks"

    def icl(self, model: str) -> Path:
        """A model's few-shot results (`xelm.icl.harness.evaluate_icl`)."""
        return self.root / "icl" / "scores" / f"{model}.json"

    def scores(self, model: str) -> Path:
        """A model's evaluation: {test set: {lang: scores}}."""
        return self.root / "eval" / f"{model}.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"
