"""Thoracic organ-at-risk segmentation on CT (SEGTHOR): a literate, tested reproduction of an ENet / SAMed / SAM2-UNet / nnU-Net study

Modules:

- `segthor_nb.interpret`: What a trained model gets wrong and why: the study's failure analysis (the validation slices with the highest foreground loss), captum attributions of one organ with a model-randomisation sanity check, an ipywidgets slice viewer, and the paper's table and figures from a folder of evaluated runs.
- `segthor_nb.losses`: Cross-entropy, Dice (MONAI), generalised Dice (MONAI), Dice + CE and SAMed's loss behind one registry, all on `(logits, one-hot target)` and all honouring partial supervision.
- `segthor_nb.train`: The training loop and everything it needs — the study's flags, optimizers, the warm-up/cosine schedule, the adaptive sampler, label-consistent augmentation, 2D/3D validation Dice, logging, checkpoints that survive a kill, resume, DDP — behind one function, `train(cfg)`, that the CLI `segthor-train`, this notebook and papermill all call."""

__version__ = "0.1.0"
