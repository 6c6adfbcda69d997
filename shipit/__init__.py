"""shipit: move Docker images between Docker engines without a registry."""

__version__ = "0.1.0"
