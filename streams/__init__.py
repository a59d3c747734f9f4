"""The shell: Kafka (Faust) agents, the CLI, ingest decoders, replay and the simulator."""
