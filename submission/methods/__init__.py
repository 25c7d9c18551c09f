"""One module per unlearning method; importing this package registers them all."""

from . import (  # noqa: F401  (imported for their @register side effect)
    bad_teacher,
    finetune,
    masked_small_gradients,
    neggrad_plus,
    random_label,
    salun,
    scrub,
    ssd,
)
