"""Adapters for outside execution engines, each an optional extra.

Importing this package imports none of the engines: each adapter module
imports its engine when it is first used, so the scheduler can ask whether
an executor belongs to an engine without installing it.
"""
