"""AI Product Photo Detector: KFP components (one per stage) and the shared library in ``common``."""
