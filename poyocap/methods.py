"""The method registry: every row of the main table (and, later, the ablation table) is one :class:`Method`.

A method says where its encoder starts (a pretraining checkpoint or random init), which recordings it is fine-tuned
on, how many steps it gets, and whether its data are transformed (a control). The fine-tuning stage runs every
registered method that applies to the task; the tables iterate the same registry, so adding a method is adding
one entry to :data:`METHODS` (``docs/architecture.md``, "How to add a method").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

Init = Literal["pretrained", "scratch", "none"]


@dataclass(frozen=True)
class Method:
    """One fine-tuning recipe.

    Attributes:
        name: the row name in every table.
        pretrain_data, finetune_data: how the tables describe its data.
        init: ``pretrained`` (the pretraining stage's encoder of the same seed), ``scratch`` (random init) or
            ``none`` (no model: the task's constant prediction, a floor).
        pool: fine-tune on the ``downstream`` mice only or on ``all`` mice (pretrain + downstream); the test set is
            always the downstream mice's.
        budget: ``finetune`` steps, or ``finetune+pretrain`` (scratch gets the pretraining's steps as well).
        transform: ``time_shuffle`` circularly shifts every ROI's trace (training and test data alike).
        tasks: the downstream tasks it runs on.
        seeds: ``all`` of the config's seeds, or only the ``first`` (cheap controls).
        role: ``method`` (run for every seed, first), ``floor`` (a level any decoder should beat) or ``reference``
            (a linear decoder on the same splits, ``options["reference"]``: ``raw`` dF/F windows or the latents of a
            ``random_encoder``; :mod:`poyocap.references`) - the bar the deep methods must clear.
        paper: the paper's numbers for this row (``ssim``, ``acc``; real Allen data).
        options: free-form settings of variants (recorded in the artifact key); in the main table
            ``pretrain_pool="in_domain"`` starts from notebook 03's in-domain encoder instead of POYO-CAP's.
    """

    name: str
    pretrain_data: str
    finetune_data: str
    init: Init
    pool: Literal["downstream", "all"] = "downstream"
    budget: Literal["finetune", "finetune+pretrain"] = "finetune"
    transform: Literal["none", "time_shuffle"] = "none"
    tasks: tuple[str, ...] = ("movie", "gratings")
    seeds: Literal["all", "first"] = "all"
    role: Literal["method", "floor", "reference"] = "method"
    paper: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The method's part of an artifact directory name."""
        return re.sub(r"[^A-Za-z0-9+.-]+", "_", self.name.replace("(", "").replace(")", "")).strip("_")

    def run_seeds(self, seeds: tuple[int, ...]) -> tuple[int, ...]:
        return seeds if self.seeds == "all" else seeds[:1]


METHODS: tuple[Method, ...] = (
    Method("POYO-CAP", "predictable lines", "unpredictable lines (downstream mice)", init="pretrained",
           paper={"ssim": 0.593, "acc": 0.555}),
    Method("Scratch (all lines)", "none", "all lines (pretrain + downstream mice)", init="scratch", pool="all",
           paper={"ssim": 0.528, "acc": 0.492}),
    Method("Scratch (downstream)", "none", "unpredictable lines (downstream mice)", init="scratch"),
    Method("Scratch (downstream, + pretraining's steps)", "none", "unpredictable lines (downstream mice)",
           init="scratch", budget="finetune+pretrain", seeds="first"),
    Method("In-domain SSL (positive control)", "downstream mice's own training windows",
           "unpredictable lines (downstream mice)", init="pretrained", options={"pretrain_pool": "in_domain"}),
    Method("Mean-frame predictor", "-", "-", init="none", tasks=("movie",), role="floor"),
    Method("Time-shuffled neurons", "-", "-", init="pretrained", transform="time_shuffle", tasks=("movie",),
           seeds="first", role="floor"),
    Method("Reference: ridge (per session)", "none", "unpredictable lines (downstream mice), one model per session",
           init="none", tasks=("movie",), role="reference", options={"reference": "raw"}),
    Method("Reference: ridge (pseudo-population)", "none",
           "unpredictable lines (downstream mice), all sessions side by side", init="none", tasks=("movie",),
           role="reference", options={"reference": "pseudo_population"}),
    Method("Reference: logistic (per session)", "none", "unpredictable lines (downstream mice), one model per session",
           init="none", tasks=("gratings",), role="reference", options={"reference": "raw"}),
    Method("Reference: random-init encoder + linear head", "none (random init, frozen)",
           "unpredictable lines (downstream mice), one head per session", init="scratch", seeds="first",
           role="reference", options={"reference": "random_encoder"}),
)

#: The ablation table (notebook 06): rows as in the paper's ablation table plus controls it lacks. ``options``:
#: ``pool`` - the pretraining pool (:func:`poyocap.stages.ablations.ablation_pools`; ``predictable`` is POYO-CAP's),
#: ``pretrain`` - overrides of ``PretrainConfig``, ``encoder`` - ``poyo`` / ``mlp`` / ``linear`` for models without
#: pretraining, ``decoder`` - movie decoder options (``pixel_decoder``, ``inject``), ``input`` - ``cebra_behavior`` /
#: ``cebra_time`` (the downstream dF/F replaced by its CEBRA embedding). Rows 5, 6 and 10 are size-matched to
#: POYO-CAP's pool (ROIs and training windows). The first row is the table's reference (p-values against it).
ABLATIONS: tuple[Method, ...] = (
    Method("POYO-CAP", "predictable lines", "unpredictable lines (downstream mice)", init="pretrained",
           paper={"ssim": 0.593, "acc": 0.555}, options={"pool": "predictable"}),
    Method("Scratch (downstream)", "none", "unpredictable lines (downstream mice)", init="scratch"),
    Method("CEBRA-Behavior (movie time) + same decoders", "none (CEBRA fitted on downstream training frames)",
           "CEBRA embedding of the downstream mice", init="scratch",
           options={"input": "cebra_behavior", "encoder": "linear"}),
    Method("CEBRA-Time + same decoders", "none (CEBRA fitted on downstream training frames)",
           "CEBRA embedding of the downstream mice", init="scratch",
           options={"input": "cebra_time", "encoder": "linear"}),
    Method("MLP encoder -> MLP decoder", "none", "unpredictable lines (downstream mice)", init="scratch",
           tasks=("movie",), paper={"ssim": 0.449}, options={"encoder": "mlp", "decoder": {"pixel_decoder": "mlp"}}),
    Method("POYO+ encoder -> MLP decoder", "predictable lines", "unpredictable lines (downstream mice)",
           init="pretrained", tasks=("movie",), paper={"ssim": 0.503},
           options={"pool": "predictable", "decoder": {"pixel_decoder": "mlp"}}),
    Method("POYO+ encoder -> U-Net without latent injection", "predictable lines", "unpredictable lines (downstream mice)",
           init="pretrained", tasks=("movie",), paper={"ssim": 0.466},
           options={"pool": "predictable", "decoder": {"inject": False}}),
    Method("Reverse SSL (size-matched)", "unpredictable lines (held-out mice)", "unpredictable lines (downstream mice)",
           init="pretrained", paper={"ssim": 0.489, "acc": 0.213}, options={"pool": "reverse"}),
    Method("Mixed SSL (size-matched)", "half unpredictable (held-out mice), half predictable",
           "unpredictable lines (downstream mice)", init="pretrained", paper={"ssim": 0.543, "acc": 0.313},
           options={"pool": "mixed"}),
    Method("Random masking", "predictable lines", "unpredictable lines (downstream mice)", init="pretrained",
           tasks=("movie",), paper={"ssim": 0.540}, options={"pool": "predictable",
                                                        # random latents: token removal is by time only
                                                        "pretrain": {"mask_mode": "random", "mask_level": "latent",
                                                                     "unit_mask_ratio": 0.0}}),
    Method("Masking only (no orientation CE)", "predictable lines", "unpredictable lines (downstream mice)",
           init="pretrained", tasks=("movie",), paper={"ssim": 0.496},
           options={"pool": "predictable", "pretrain": {"ce_weight": 0.0}}),
    Method("Inhibitory-only SSL", "predictable lines of inhibitory cell class", "unpredictable lines (downstream mice)",
           init="pretrained", paper={"ssim": 0.544, "acc": 0.537}, options={"pool": "inhibitory"}),
    Method("Time-shuffled pool (size-matched)", "predictable lines, each trace circularly shifted",
           "unpredictable lines (downstream mice)", init="pretrained", options={"pool": "time_shuffled"}),
    Method("Label-free pool (per-neuron filter)", "neurons below both per-neuron knees (non-downstream mice)",
           "unpredictable lines (downstream mice)", init="pretrained", options={"pool": "label_free"}),
    Method("In-domain SSL (positive control)", "downstream mice's own training windows",
           "unpredictable lines (downstream mice)", init="pretrained", options={"pool": "in_domain"}),
)

#: the reference every p-value in the main table is computed against
REFERENCE_METHOD = "POYO-CAP"


def get_method(name: str, registry: Sequence[Method] | None = None) -> Method:
    """The method called ``name`` in ``registry`` (default: the main table's :data:`METHODS`; or
    :data:`ABLATIONS`)."""
    registry = METHODS if registry is None else registry
    for method in registry:
        if method.name == name:
            return method
    raise KeyError(f"no method {name!r}; registered: {', '.join(m.name for m in registry)}")


def methods_for(task: str, role: str | None = None) -> list[Method]:
    """Registered methods that run on ``task`` (optionally of one ``role``), in registry order."""
    return [m for m in METHODS if task in m.tasks and (role is None or m.role == role)]
