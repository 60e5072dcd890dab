"""Serving: which model runs and how it loads, one inspection's JSON result, and the HTTP API around the app."""
