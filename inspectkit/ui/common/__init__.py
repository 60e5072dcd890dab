"""What several tabs share: result rendering, heat-map legends, exports, the report view and the session's model."""
