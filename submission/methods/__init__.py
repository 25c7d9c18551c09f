"""One module per unlearning method; importing this package registers them all."""

from . import (  # noqa: F401  (imported for their @register side effect)
    bad_teacher,
    contrastive,
    conv_transpose,
    finetune,
    fisher_forgetting,
    forget_contrast,
    forget_free,
    masked_small_gradients,
    neggrad,
    neggrad_plus,
    noise_injection,
    noisy_weights,
    prune_reinit,
    random_label,
    reset_distill,
    salun,
    scrub,
    shrink_perturb,
    ssd,
    svd_projection,
)
