"""The application shell: hosting rooms (:mod:`~matchlock.app.hosting`), joining one
(:mod:`~matchlock.app.joining`, :mod:`~matchlock.app.roomevents`), key and config files, and the
Ikemen GO launch helper. Each wraps the core with real IO; none holds a rule of the protocol.
"""
