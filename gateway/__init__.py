"""SITLab gateway: stores node messages from MQTT, serves them over REST and SSE."""
