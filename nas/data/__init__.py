"""Data: folders and synthetic tasks -> ``SegmentationData`` (tensors, split, normalization); training patches."""
