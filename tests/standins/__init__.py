"""Local stand-ins for external services, speaking their wire protocols for the real client libraries."""
