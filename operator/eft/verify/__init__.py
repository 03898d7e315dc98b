"""Post-deploy verification: BEIR evaluation of the test split through a live endpoint (`eft verify`)."""

from eft.verify.core import verify_endpoint

__all__ = ["verify_endpoint"]
