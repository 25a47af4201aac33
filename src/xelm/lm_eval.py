"""`python -m xelm.lm_eval ...`: lm-evaluation-harness's own command line, with X-ELM ensembles
known as `--model xelm` (lm-eval 0.4 has no plugin entry point for model classes).

    python -m xelm.lm_eval run --model xelm \
        --model_args pretrained=runs/demo/ensembles/typology-k4,router=lid,top_k=1 \
        --include_path runs/demo/icl/tasks/lm_eval --tasks xelm_translation_de --num_fewshot 4
"""

from __future__ import annotations


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import xelm.icl.lm  # noqa: F401  (registers --model xelm)

    cli_evaluate()


if __name__ == "__main__":
    main()
