"""The Adapt tab: photos in, a model adapted to the new line (or an uploaded checkpoint) out, for this session."""
