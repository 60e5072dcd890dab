"""Inspecting a shift of photos without the app: one row per photo (CSV, JSON Lines, Parquet), resumable; locally or
on Ray Data."""
