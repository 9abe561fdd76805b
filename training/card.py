"""MODEL_CARD.md, written from the manifest, with the grids of training.grids beside it."""

from __future__ import annotations

from pathlib import Path

import torch

from service.engine import adaptive
from training import abstention_curve
from training.configs import STARTS
from training.grids import image_grid, reconstruction_grid, sample_grid
from training.handwriting import SOURCES
from training.model import CVAE, Checkpoint


def write_card(
    model: CVAE,
    checkpoint: Checkpoint,
    manifest: dict,
    model_dir: Path,
    x: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
) -> Path:
    """The sample and reconstruction grids, then MODEL_CARD.md."""
    samples = sample_grid(model, per_class=10, seed=seed)
    image_grid(samples, columns=10).save(model_dir / "samples.png")
    recon = reconstruction_grid(model, x, labels, per_class=2)
    image_grid(recon, columns=len(recon) // 4).save(model_dir / "reconstructions.png")
    return refresh_card(model_dir, manifest)


def refresh_card(model_dir: Path, manifest: dict) -> Path:
    """MODEL_CARD.md from the manifest alone (the grids stay as they are)."""
    path = Path(model_dir) / "MODEL_CARD.md"
    path.write_text(card_text(manifest))
    return path


def _number(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def _proposal_section(manifest: dict) -> str:
    proposal = manifest.get("proposal") or {"type": "gaussian"}
    lines = ["## Proposal q(z|x,y)"]
    if proposal["type"] == "coupling_flow":
        lines += [
            "- z = mu + sigma * f(eps), eps ~ N(0, I): the encoder's Gaussian base reshaped by "
            f"{proposal['flow_layers']} affine coupling layers (hidden {proposal['flow_hidden']}) conditioned on "
            "the encoder's last hidden layer.",
            "- Trained with the rest of the model from the start (see Training).",
        ]
    else:
        lines.append("- The encoder's Gaussian N(mu, diag exp(logvar)); z = mu + sigma * eps.")
    return "\n".join(lines) + "\n"


def _looks(looks: list) -> str:
    return ", then ".join(f"{samples} @ {margin:.1f}" for samples, margin in looks)


def _screening_section(manifest: dict) -> str:
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


def _ais_section(manifest: dict) -> str:
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


def _ood_section(manifest: dict) -> str:
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
was counted on the {b["split"]} split ({b["binary_images_counted"]} binary images, {b["binarization"]}); the
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


def _objective(tc: dict) -> str:
    k = tc.get("num_samples")
    if tc.get("objective") == "dreg":
        a = tc.get("elbo_weight", 0.0)
        return (
            f"the importance-weighted bound on log p(x|y) with k = {k} samples, its gradient for q's parameters "
            "doubly reparameterized (Tucker et al., 2019: sum_i w~_i^2 d log w_i / dz_i dz_i/dphi) and for the "
            f"decoder's {a:g} x the ELBO's plus {1 - a:g} x the bound's own"
        )
    return f"the importance-weighted bound on log p(x|y) with k = {k} samples (reparameterization z = mu + sigma * eps)"


def card_text(manifest: dict) -> str:
    seed = manifest["metrics"]["noise_seed"] - 1  # evaluate's --seed, which also drew the sample grid
    m = manifest["metrics"]
    screening = m.get("screening")
    how = (
        f"adaptive: every class first got {screening['samples']} samples, and the classes within "
        f"{screening['margin_nats']:g} nats of the image's best log p(x, y) got all {m['num_importance_samples']} "
        f"(on average {screening['mean_samples_per_class']:.0f} per class)"
        if screening
        else f"{m['num_importance_samples']} importance samples per class and image"
    )
    t = manifest["training"]
    tc = t["config"] or {}
    mc = manifest["model_config"]
    v = t.get("validation") or {}
    text = f"""# Model card: {manifest["name"]} {manifest["version"]}

A class-conditional variational autoencoder for binarized MNIST digits:
p(x) = sum_y p(y) integral p(x|z,y) p(z) dz, with p(z) = N(0, I), p(y) the class
frequencies of the training labels, an encoder q(z|x,y) (see "Proposal"), and a
{mc["likelihood"]} pixel likelihood whose mean is sigmoid(logits).

## Architecture
- Latent size {mc["latent_dim"]}, {mc["num_classes"]} classes, images {mc["image_shape"][0]}x{mc["image_shape"][1]}.
- Encoder and decoder: MLPs with hidden layers {list(mc["hidden_dims"])} and SiLU activations;
  the one-hot class enters every layer.
- Files: `encoder.onnx`, `decoder.onnx`, `scorer.onnx` (importance log-weights in one graph),
  `checkpoint.pt` (PyTorch weights for `cvae evaluate`), `manifest.json` (sizes, checksums, metrics).

{_proposal_section(manifest)}{_screening_section(manifest)}
## Training
- Data: the MNIST training set, {t.get("num_train_images")} images for training and
  {t.get("num_val_images")} held out for validation (chosen by seed {tc.get("seed")}); the test set
  was not used for any choice. Dynamic binarization: x ~ Bernoulli(pixel/255) each time an image is drawn.
- Objective: {_objective(tc)}, plus {tc.get("classify_weight")} x the cross-entropy of
  Bayes' rule over the single-sample ELBOs of all classes, with the encoder held fixed in that term.
- Adam, batch {tc.get("batch_size")}, learning rate {tc.get("learning_rate")} with cosine decay to
  {tc.get("final_learning_rate")}, {tc.get("epochs")} epochs; the checkpoint kept is the epoch with the best
  validation bound on log p(x) (epoch {t.get("best_epoch")}: bound {v.get("val_bound_log_px", float("nan")):.2f} nats,
  validation accuracy {100 * v.get("val_accuracy", float("nan")):.2f} % with k = {tc.get("num_samples")}).
- Training took {(t.get("seconds") or 0) / 60:.1f} minutes on the machine that ran it.

## Test figures
Measured by `{m["command"]}` on {m["num_test_images"]} test images,
{m["binarization"]}; {how} (noise seed {m["noise_seed"]});
log p(x) marginalized over the 10 classes with logsumexp.

| metric | value |
|---|---|
| negative log-likelihood -log p(x) | {m["nll"]:.2f} nats |
| bits per dimension | {m["bits_per_dim"]:.4f} |
| -log p(x \\| y_true) | {m["nll_given_true_class"]:.2f} nats |
| ELBO of log p(x \\| y_true) | {m["elbo_given_true_class"]:.2f} nats |
| reconstruction cross-entropy | {m["reconstruction_cross_entropy"]:.2f} nats |
| KL(q(z\\|x,y) \\|\\| p(z)) | {m["kl"]:.2f} nats |
| accuracy of argmax_y p(y\\|x) | {100 * m["accuracy"]:.2f} % |
| expected calibration error (15 bins) | {m["ece_15_bins"]:.4f} |

Published anchors on dynamically binarized MNIST (-log p(x), nats): VAE 86.76,
IWAE with one stochastic layer 84.78, with two 82.90 (Burda et al., 2016).

{_ais_section(manifest)}{_ood_section(manifest)}## Samples
Each row is one class (0 to 9), images are the Bernoulli means sigmoid(logits) for z ~ N(0, I), seed {seed}:

![samples](samples.png)

## Reconstructions
Rows alternate test images (binarized) and the means of p(x|z = mu(x, y), y) for their true class:

![reconstructions](reconstructions.png)

## Limits
- Trained on MNIST digits only; p(y|x) on anything else is not meaningful. log p(x) alone does not
  tell digits from other things (a blank page scores higher than any digit); the out-of-distribution
  assessment does, for the kinds of input measured by `python -m bench.ood`. Its critic learned what
  is not a digit from printed characters and reshaped digits; handwriting that is not a digit
  (letters, other scripts) was never shown to it and is not measured.
- log p(x) is an importance-sampling estimate: a stochastic lower bound in expectation, tighter as K grows.
  Each answer carries its standard error and the Pareto k-hat of its weights; where k-hat is above its
  threshold (`log_px_reliable` false), the weights are heavy-tailed and both the estimate and its
  standard error are likely too low.
"""
    return text
