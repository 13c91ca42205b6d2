"""Deployable echo servers: ``python -m servers grpc|ws|tcp ...`` (see DESIGN.md)."""
