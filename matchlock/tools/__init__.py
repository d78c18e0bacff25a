"""Tooling around the library, never imported by it: the deterministic simulation of the real
shells, the HTML timeline, text rendering, the statecharts and schemas exported from the code,
the demo, and helpers for tests.
"""
