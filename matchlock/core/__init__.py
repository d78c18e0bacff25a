"""The pure core: the models, the signatures, the events, the machines and their fold, the log
line codec, the wire messages, and the sans-IO host and member protocols.

Nothing here reads a clock, draws randomness, opens a file or a socket, or imports the shell:
time and nonces enter as data. ``lint-imports`` checks it in CI (``pyproject.toml``).
"""
