"""Reading photo sets: folder layouts, datasets, near-duplicate splits (numpy, OpenCV; no torch)."""
