"""Shared test settings: headless matplotlib, no network for albumentations, small thread count."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
