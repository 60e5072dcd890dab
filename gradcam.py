"""The design card's Grad-CAM: :class:`GradCAM` holds its hooks in a context manager and removes them. It lives in
:mod:`inspectkit.heatmap.gradcam`; this file is the door kept at the top of the repository."""

from inspectkit.heatmap.gradcam import (  # noqa: F401 (the door's names)
                                        COLORMAPS,
                                        GradCAM,
                                        cam_from_features,
                                        colorize,
                                        default_layer,
                                        find_layer,
                                        gradcam,
                                        heatmap_at,
                                        hook_count,
                                        linear_head,
                                        normalize01,
                                        overlay,
)
