"""newsletter-enhancer: REST service turning newsletter items into validated semantic metadata."""

__version__ = "0.1.0"
