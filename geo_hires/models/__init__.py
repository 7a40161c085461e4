"""Models: architectures and cards (plain values), the fully convolutional CenterNet-style
scanners, box coding, ultralytics models, the zoom policy, and bundles that load them.

Import from the submodules (``geo_hires.models.bundle``, ``.card``, ``.fcn``…): this package
imports nothing itself, so reading a card never imports torch.
"""
