"""The design card's inference entry point: :class:`InferenceHandler` loads ``final_best_model.pt``, predicts OK or
DEFECT, times each stage and makes the Grad-CAM overlay. It lives in :mod:`inspectkit.inference.handler`; this
file is the door kept at the top of the repository, so ``from inference_handler import InferenceHandler`` works
from a checkout without installing anything."""

from inspectkit.inference.handler import (  # noqa: F401 (the door's names)
                                          BACKENDS,
                                          CLASS_NORMALISED,
                                          DEFAULT_CHECKPOINT,
                                          EVIDENCE,
                                          HEATMAP_MODES,
                                          STAGES,
                                          InferenceHandler,
                                          InspectionResult,
)
