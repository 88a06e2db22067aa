"""SITLab gateway: ingest node messages from MQTT, store them, serve a REST and SSE API."""
