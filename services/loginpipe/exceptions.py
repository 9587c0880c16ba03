"""Errors the services raise on purpose; each carries a message that says what to do."""


class LoginpipeError(Exception):
    """Base of the project's own errors."""


class ConfigError(LoginpipeError):
    """A setting is missing or wrong. The message names the variable and what to set."""


class DependencyUnavailable(LoginpipeError):
    """Kafka or Redis could not be reached at start-up, or a topic is missing."""


class RepeatingFailure(LoginpipeError):
    """The same work kept failing past its retry budget: the service gives up, naming why."""


class ProducerHung(DependencyUnavailable):
    """A call into the Kafka producer never came back: the process must end, not wait."""
