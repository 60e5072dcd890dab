"""Heat maps: rendering and colour maps, Grad-CAM (torch), and the fixed defect-evidence scale."""
