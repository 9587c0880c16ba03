"""loginpipe: a real-time pipeline for login events on Kafka and Redis."""

__version__ = "0.1.0"
