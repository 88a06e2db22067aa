"""Model tooling: registry, install, export, int8 quantisation, accuracy, timing."""
