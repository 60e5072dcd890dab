"""The model's life cycle: training, adaptation to a new line, evaluation, heat-map calibration, guard fitting,
localisation reports. Needs torch (requirements-train.txt)."""
