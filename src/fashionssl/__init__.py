"""fashionssl: self-supervised visual representation learning on Fashion-MNIST."""

__version__ = "0.1.0"
