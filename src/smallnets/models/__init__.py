"""The model zoo: importing this package registers every family."""

from smallnets.models import densenet, efficientnet, mobilenet, shufflenet, squeezenet, xception  # noqa: F401
