"""SITLab Edge node: detect, track, count and report over MQTT."""

__version__ = "0.1.0"
