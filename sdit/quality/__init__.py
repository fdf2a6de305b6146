"""Sample quality measured offline: feature networks, reference statistics and distances.

- :mod:`sdit.quality.metrics`: FID, KID, precision / recall / density / coverage as pure
  functions over feature arrays (numpy, no torch).
- :mod:`sdit.quality.classifier`: the small image classifier trained in this project, whose
  penultimate layer is the domain feature space.
- :mod:`sdit.quality.features`: feature networks behind one interface (Inception-v3 FID
  features from a local TorchScript file, and the domain classifier), each with its sha256.
- :mod:`sdit.quality.reference`: reference features of a real image set, cached on disk,
  keyed by the feature network's and the images' hashes.
- :mod:`sdit.quality.evaluate`: samples from a model, their features, and every metric.
"""
