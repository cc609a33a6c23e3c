"""Thoracic organ-at-risk segmentation on CT (SEGTHOR): a literate, tested reproduction of an ENet / SAMed / SAM2-UNet / nnU-Net study

Modules:

- `segthor_nb.losses`: Cross-entropy, Dice (MONAI), generalised Dice (MONAI), Dice + CE and SAMed's loss behind one registry, all on `(logits, one-hot target)` and all honouring partial supervision."""

__version__ = "0.1.0"
