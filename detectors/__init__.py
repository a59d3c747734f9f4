"""Online anomaly detection: telemetry points in, alerts out. No I/O, no clock, no Kafka."""
