"""The model card's sections on how the model is scored and checked: the screening, the comparison with annealed
importance sampling, and the out-of-distribution assessment, each from the manifest (empty where it has none)."""

from __future__ import annotations

from service.engine import adaptive
from training import abstention_curve
from training.configs import STARTS
from training.handwriting import SOURCES


def _looks(looks: list) -> str:
    return ", then ".join(f"{samples} @ {margin:.1f}" for samples, margin in looks)


def screening_section(manifest: dict) -> str:
    own = manifest.get("screening")
    if not own:
        return ""
    rows = [
        f"| {_looks(r['looks'])} | {_looks([[s, n] for (s, _), n in zip(r['looks'], r['needed_margins'])])} "
        f"| {r['samples_per_image']:.0f} | {r['max_abs_diff_py_x']:.2g} | {r['max_abs_diff_log_px']:.4f} "
        f"| {r['changed_predictions']} |"
        for r in own["candidates"]
    ]
    errors = ", ".join(f"{size} draws {value:.1f} nats" for size, value in own["underestimates"].items())
    return f"""
## Screening
The service's adaptive scoring uses {adaptive.screening_for(manifest).text()} (each look gives the classes
still in play that many samples in all and keeps those within the margin of the image's best; the
classes left get all K).
Chosen by `cvae screening` on {own["chosen_on"]}: {own["rule"]}. Largest underestimates of a near
class's distance from the best: {errors}.

| screening (samples @ margin in nats, each look) | margins needed | samples per image | largest \\|Δ p(y\\|x)\\| \
| largest \\|Δ log p(x)\\| (nats) | predictions changed |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def ais_section(manifest: dict) -> str:
    ais = (manifest.get("metrics") or {}).get("ais")
    if not ais:
        return ""
    a = ais["ais"]
    return f"""## Against annealed importance sampling
`{ais["command"]}`: the first {ais["images"]} test images ({ais["binarization"]}), scored by the
service's own code at its default settings and by AIS ({a["num_chains"]} chains from
{STARTS[a.get("start", "encoder")]}, {a["num_temperatures"]} temperatures on a sigmoid schedule, HMC with
{a["leapfrog_steps"]} leapfrog steps, acceptance {ais["ais_acceptance"]:.2f}) for every class with
p(y|x) >= 0.001. Per image in `ais.json`.

| | nats |
|---|---|
| mean \\|service - AIS\\| | {ais["mean_abs_gap_nats"]:.3f} |
| mean service - AIS | {ais["mean_gap_nats"]:.3f} |
| largest \\|service - AIS\\| | {ais["max_abs_gap_nats"]:.3f} |
| median standard error of AIS | {ais["median_ais_std_error"]:.3f} |

"""


def _cells(row: dict) -> str:
    """One abstention curve's cells of a row: the share abstained and the accuracy of the rest."""
    return f" {100 * row['abstained']:.2f} % | {_percent(row['accuracy_kept'])} |"


def _without_vote_note(unvoted: list[dict], budget: float) -> str:
    if not unvoted:
        return ""
    return (
        " The last two columns are for requests with `critic_vote` false, which abstain only when flagged or "
        "when p(predicted|x) < min_probability: pick a threshold there when turning the vote off (the largest "
        f"within {100 * budget:.0f} % there: {abstention_curve.largest_within(unvoted, budget)})."
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _halves(reference: dict) -> str:
    return f"; {reference['halves']}" if reference.get("halves") else ""


def _critic(manifest: dict) -> str:
    entry = manifest["files"].get("ood_critic")
    if not entry:
        return ""
    t, c = entry["training"], entry["training"]["config"]
    return (
        f"\n\nThe critic, `{entry['file']}`, was trained on {t['digits']} (split seed {t['split']['seed']}, "
        f"{t['split']['val_size']} held out) against {c['num_outliers']} made-up non-digits ({t['outliers']}), "
        f"{c['epochs']} epochs, width {c.get('width', 1)}, seed {c['seed']}, in {t['seconds']:.0f} s"
        f" on {'a GPU' if str(c.get('device', 'cpu')).startswith('cuda') else 'the CPU'}.{_real(t)}"
    )


def _real(t: dict) -> str:
    """The real handwriting the critic learned from, each source with its licence, and where it started."""
    text = ""
    if start := t.get("started_from"):
        text += f" It was fine-tuned from the critic of `{start['model_dir']}` (sha256 {start['sha256'][:12]}…)."
    if "handwriting" in t:
        h = t["handwriting"]
        named = "; ".join(f"{name} ({SOURCES[name].licence})" for name in h["sources"].split(", "))
        text += (
            f" {h['images']} images of real handwriting that is not a digit made {h['share']:.0%} of its non-digits "
            f"(the training parts of training.handwriting; the held-out parts and math-operators stay out): {named}."
        )
    return text


def _weight(entry: dict) -> str:
    if "critic_weight" not in entry:  # calibrations before the weight combine the two alike
        return ""
    return (
        f" The critic's weight w is {entry['critic_weight']} (0.5 weighs both alike; `cvae calibrate` defaults to "
        "the weight chosen on validation digits against bench.ood's design sets)."
    )


def _counted(b: dict) -> str:
    if "binary_images_counted" in b:
        return f"{b['binary_images_counted']} binary images, {b['binarization']}"
    return f"{b['images_counted']} images, {b['pixels']}"


def ood_section(manifest: dict) -> str:
    entry = manifest["files"].get("ood")
    if not entry:
        return ""
    r, b, a = entry["reference"], entry["background"], entry["abstention"]
    unvoted = {row["min_probability"]: row for row in a.get("curve_without_vote", [])}
    rows = "\n".join(
        f"| {row['min_probability']} |" + _cells(row) + (_cells(unvoted[row["min_probability"]]) if unvoted else "")
        for row in a["curve"]
    )
    header = (
        "| min_probability | with the critic's vote: abstained | accuracy kept | critic_vote false: abstained | "
        "accuracy kept |"
        if unvoted
        else "| min_probability | abstained | accuracy kept |"
    )
    return f"""## Out-of-distribution assessment
`ood.npz`, made by `cvae calibrate` in {entry["seconds"]:.0f} s: {entry["method"]}.{_weight(entry)} The background model
was counted on the {b["split"]} split ({_counted(b)}); the
reference is {r["indices"]}, {r["binarization"]}, scored at {r["settings"]}{_halves(r)}. At the default
false-positive rate {entry["default_fpr"]}, {100 * entry["validation_flagged_at_default"]:.2f} % of these
validation digits are flagged.{_critic(manifest)}

Abstention of /v1/classify on the same validation digits ({a["rule"]}),
and the accuracy of the answers kept; the default threshold is the largest within {100 * a["budget"]:.0f} %
abstention: {a["default_min_probability"]}.{_without_vote_note(list(unvoted.values()), a["budget"])}

{header}
|---|---|---|{"---|---|" if unvoted else ""}
{rows}

"""


def assessment_section(manifest: dict) -> str:
    """The out-of-distribution verdicts `cvae evaluate` measured on the test images and on sets of other images."""
    m = manifest.get("metrics") or {}
    figures = m.get("assessment")
    if not figures:
        return ""
    rows = "\n".join(
        f"| {name} | {f['images']} | {100 * f['flagged']:.1f} % | {f['auroc']:.4f} |"
        for name, f in figures["outliers"].items()
    )
    table = (
        "\n\n| images not of the model's kind | images | flagged | AUROC against the test images |\n"
        f"|---|---|---|---|\n{rows}"
        if rows
        else ""
    )
    return f"""## Out-of-distribution verdicts on test images
`{m["command"]}` assessed the {figures["num_test_images"]} test images at the service's defaults (one request,
false-positive rate {figures["fpr"]}): {100 * figures["test_flagged"]:.2f} % of them were flagged.{table}

"""
