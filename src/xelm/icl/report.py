"""Few-shot results as tables (terminal and markdown) and a plot."""

from __future__ import annotations

from pathlib import Path

from xelm.icl.winrate import cell_means, cells, win_rate

METRIC = "acc_norm"


def accuracy_rows(results: dict[str, dict], metric: str = METRIC) -> tuple[list[str], list[list]]:
    """Header and rows: task, lang, shots, chance, then each model's mean accuracy ± spread
    (the standard deviation over demonstration seeds)."""
    models = list(results)
    keys = sorted(
        {k for r in results.values() for k in cell_means(r, metric)},
        key=lambda k: (k[0], k[1] or "", int(k[2])),
    )
    spread = {m: _spreads(results[m], metric) for m in models}
    means = {m: cell_means(results[m], metric) for m in models}
    rows = []
    for key in keys:
        chance = next((means[m][key][2] for m in models if key in means[m]), None)
        row = [key[0], key[1] or "", key[2], "" if chance is None else f"{chance:.2f}"]
        for m in models:
            if key in means[m]:
                s = spread[m][key]
                row.append(f"{means[m][key][0]:.3f}" + (f" ±{s:.3f}" if s else ""))
            else:
                row.append("")
        rows.append(row)
    return ["task", "lang", "shots", "chance", *models], rows


def _spreads(result: dict, metric: str) -> dict[tuple, float]:
    out = {}
    for entry in result.values():
        for shots, cell in entry["shots"].items():
            xs = cell[metric]
            mean = sum(xs) / len(xs)
            out[(entry["task"], entry["lang"], shots)] = (
                (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
            )
    return out


def win_rate_rows(
    results: dict[str, dict], baselines: list[str], metric: str = METRIC
) -> tuple[list[str], list[list]]:
    """One row per (model, baseline): win rate with its 95 % interval and the noise counts."""
    header = [
        "model",
        "vs",
        "win rate",
        "95 % CI",
        "cells",
        "clear wins",
        "clear losses",
        "within noise",
        "meaningful wins",
        "model near chance",
    ]
    rows = []
    for baseline in baselines:
        for model in results:
            if model == baseline or baseline not in results:
                continue
            w = win_rate(cells(results[model], results[baseline], metric))
            if not w["cells"]:
                continue
            rows.append(
                [
                    model,
                    baseline,
                    f"{w['rate']:.2f}",
                    f"{w['ci95'][0]:.2f}–{w['ci95'][1]:.2f}",
                    w["cells"],
                    w["clear_wins"],
                    w["clear_losses"],
                    w["within_noise"],
                    w["meaningful_wins"],
                    w["ours_near_chance"],
                ]
            )
    return header, rows


def _rich(title: str, header: list[str], rows: list[list]):
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    return table


def accuracy_tables(results: dict[str, dict]) -> list:
    return [_rich(f"few-shot {METRIC} (mean ± sd over seeds)", *accuracy_rows(results))]


def win_rate_table(results: dict[str, dict], baseline: str):
    return _rich(f"win rates ({METRIC})", *win_rate_rows(results, [baseline]))


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def mean_by_task_shots(result: dict, metric: str = METRIC) -> dict[tuple[str, str], float]:
    """Mean accuracy over languages, per (task, shots)."""
    acc: dict[tuple[str, str], list[float]] = {}
    for (task, _, shots), (mean, _, _) in cell_means(result, metric).items():
        acc.setdefault((task, shots), []).append(mean)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def plot_icl(results: dict[str, dict], path: Path, metric: str = METRIC) -> None:
    """Mean accuracy over languages vs shots, one panel per task, one line per model, with
    chance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = {m: mean_by_task_shots(r, metric) for m, r in results.items()}
    tasks = sorted({t for m in means.values() for t, _ in m})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for model, m in means.items():
            shots = sorted((int(s) for t, s in m if t == task))
            ax.plot(shots, [m[(task, str(s))] for s in shots], marker="o", label=model)
        chances = [e["chance"] for r in results.values() for e in r.values() if e["task"] == task]
        if chances and all(c is not None for c in chances):
            ax.axhline(sum(chances) / len(chances), ls="--", color="grey", lw=1, label="chance")
        ax.set_title(task)
        ax.set_ylim(0, 1)  # the whole range: small differences should look small
        ax.set_xlabel("demonstrations")
        ax.set_ylabel(f"{metric}, mean over languages")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def icl_markdown(results: dict[str, dict], plot: str | None) -> str:
    """The report section: win rates, mean accuracy per task and shots, every cell."""
    baselines = [b for b in ("dense", "seed") if b in results]
    parts = ["\n## Few-shot in-context learning\n"]
    parts.append(
        f"Accuracy is lm-eval's `{METRIC}` (the option with the highest log-likelihood per "
        "byte), the mean over demonstration seeds, on tasks built from the held-out test pages "
        "(`xelm data icl`). A cell is one (task, language, shots). A win is within noise when "
        "the difference is under 1.96 standard errors of two binomial accuracies; it is "
        "meaningful only when it is clear and the winner is clearly above chance.\n"
    )
    header, rows = win_rate_rows(results, baselines)
    if rows:
        parts.append(markdown_table(header, rows) + "\n")
    means = {m: mean_by_task_shots(r) for m, r in results.items()}
    keys = sorted({k for m in means.values() for k in m}, key=lambda k: (k[0], int(k[1])))
    chance = _chance_by_task(results)
    head = ["task", "shots", "chance", *results]
    body = [
        [
            task,
            shots,
            f"{chance[task]:.2f}" if chance.get(task) is not None else "",
            *(f"{means[m][(task, shots)]:.3f}" if (task, shots) in means[m] else "" for m in means),
        ]
        for task, shots in keys
    ]
    parts.append("Mean accuracy over languages:\n")
    parts.append(markdown_table(head, body) + "\n")
    if plot:
        parts.append(f"![few-shot accuracy]({plot})\n")
    parts.append("Every cell (mean ± standard deviation over demonstration seeds):\n")
    parts.append(markdown_table(*accuracy_rows(results)) + "\n")
    return "\n".join(parts)


def _chance_by_task(results: dict[str, dict]) -> dict[str, float | None]:
    chances: dict[str, list] = {}
    for r in results.values():
        for entry in r.values():
            chances.setdefault(entry["task"], []).append(entry.get("chance"))
    return {
        t: (sum(c) / len(c) if all(x is not None for x in c) else None) for t, c in chances.items()
    }
