"""Ready study files (YAML); ``default.yaml`` is the embedded default study."""
