"""cityseg: U-Net/ResNet-34 semantic segmentation on Cityscapes with cross-validation and official evaluation."""

__version__ = "0.1.0"
