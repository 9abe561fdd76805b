"""MODEL_CARD.md, written from the manifest, with the grids of training.grids beside it."""

from __future__ import annotations

from pathlib import Path

import torch

from training.card_sections import ais_section, assessment_section, ood_section, screening_section
from training.grids import image_grid, reconstruction_grid, sample_grid
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


MNIST_ANCHORS = """Published anchors on dynamically binarized MNIST (-log p(x), nats): VAE 86.76,
IWAE with one stochastic layer 84.78, with two 82.90 (Burda et al., 2016).
"""
FASHION_ANCHORS = """Published anchors on Fashion-MNIST's grey levels (bits per dimension): Glow 2.96 (Nalisnick et al.,
2019, "Do deep generative models know what they don't know?", as tabled by Havtorn et al., 2021), PixelCNN++
2.72 to 2.75 and Glow 3.02 to 3.04 (Bergamin et al., 2022, AISTATS, supplementary table). No figure of a
VAE-family model on its 256 grey levels was found: the hierarchical VAE's 0.420 bits/dim (Havtorn et al., 2021,
ICML) is of dynamically binarized Fashion-MNIST and cannot be compared with this one.
"""
ANCHORS = {"mnist-cvae": MNIST_ANCHORS, "fashion-cvae": FASHION_ANCHORS}  # by model name: its data's figures
MNIST_LIMITS = """- Trained on MNIST digits only; p(y|x) on anything else is not meaningful. log p(x) alone does not
  tell digits from other things (a blank page scores higher than any digit); the out-of-distribution
  assessment does, for the kinds of input measured by `python -m bench.ood`. Its critic learned what
  is not a digit from printed characters, reshaped digits and, where the critic's paragraph above names
  them, real handwriting that is not a digit."""


def _described(manifest: dict) -> dict[str, str]:
    """The card's phrases that depend on the model's data and likelihood."""
    names, mc = manifest["class_names"], manifest["model_config"]
    bernoulli = mc["likelihood"] == "bernoulli"
    mnist = "mnist" in manifest.get("preprocess", ["mnist"])  # a manifest without the list is of MNIST
    data = "MNIST digits" if mnist else f"{manifest['name'].removesuffix('-cvae')} images"
    return {
        "images": f"binarized {data}" if bernoulli else f"{data} in 256 grey levels",
        "likelihood": f"{mc['likelihood']} pixel likelihood whose mean is sigmoid(logits)"
        if bernoulli
        else "discretized logistic likelihood of each pixel's 256 levels, its mean sigmoid(logits) and its scale "
        "from the decoder's second half",
        "size": "x".join(str(side) for side in mc["image_shape"]),
        "classes": "0 to 9" if names == [str(i) for i in range(10)] else ", ".join(names),
        "training_set": "the MNIST training set" if mnist else f"the {data}' training set",
        "drawn": "Dynamic binarization: x ~ Bernoulli(pixel/255) each time an image is drawn."
        if bernoulli
        else "The grey levels as stored, pixel/255.",
        "means": "Bernoulli means sigmoid(logits)" if bernoulli else "means of each pixel's logistic",
        "shown": "binarized" if bernoulli else "as stored",
        "limits": MNIST_LIMITS
        if mnist
        else f"- Trained on {data} only; p(y|x) on anything else is not meaningful. log p(x) alone does not tell\n"
        "  them from other things; the out-of-distribution assessment does, for the kinds of input measured above.",
    }


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
    d = _described(manifest)
    text = f"""# Model card: {manifest["name"]} {manifest["version"]}

A class-conditional variational autoencoder for {d["images"]}:
p(x) = sum_y p(y) integral p(x|z,y) p(z) dz, with p(z) = N(0, I), p(y) the class
frequencies of the training labels, an encoder q(z|x,y) (see "Proposal"), and a
{d["likelihood"]}.

## Architecture
- Latent size {mc["latent_dim"]}, {mc["num_classes"]} classes ({d["classes"]}), images {d["size"]}.
- Encoder and decoder: MLPs with hidden layers {list(mc["hidden_dims"])} and SiLU activations;
  the one-hot class enters every layer.
- Files: `encoder.onnx`, `decoder.onnx`, `scorer.onnx` (importance log-weights in one graph),
  `checkpoint.pt` (PyTorch weights for `cvae evaluate`), `manifest.json` (sizes, checksums, metrics).

{_proposal_section(manifest)}{screening_section(manifest)}
## Training
- Data: {d["training_set"]}, {t.get("num_train_images")} images for training and
  {t.get("num_val_images")} held out for validation (chosen by seed {tc.get("seed")}); the test set
  was not used for any choice. {d["drawn"]}
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
log p(x) marginalized over the {mc["num_classes"]} classes with logsumexp.

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

{ANCHORS.get(manifest["name"], "")}
{ais_section(manifest)}{ood_section(manifest)}{assessment_section(manifest)}## Samples
Each row is one class ({d["classes"]}), images are the {d["means"]} for z ~ N(0, I), seed {seed}:

![samples](samples.png)

## Reconstructions
Rows alternate test images ({d["shown"]}) and the means of p(x|z = mu(x, y), y) for their true class:

![reconstructions](reconstructions.png)

## Limits
{d["limits"]}
- log p(x) is an importance-sampling estimate: a stochastic lower bound in expectation, tighter as K grows.
  Each answer carries its standard error and the Pareto k-hat of its weights; where k-hat is above its
  threshold (`log_px_reliable` false), the weights are heavy-tailed and both the estimate and its
  standard error are likely too low.
"""
    return text
