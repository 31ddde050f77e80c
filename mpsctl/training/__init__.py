"""Training: epoch steps and evaluation (``epoch``), interruptible epoch loops (``loop``),
optimizers and schedules (``optim``), torchrun support (``distributed``), device and seeds
(``device``). Nothing here reads recipes; stages pass plain values and objects."""
