"""The hypothesis profile of a mutation run (``docs/mutation.md``), loaded as a pytest plugin.

``mutmut run`` runs the property tests once per mutant, so it asks for fewer examples and no
shrinking (a mutant is killed by the first failing example; nobody reads the minimal one), with
the examples derived from each test's name, so two runs over the same code give the same score.
It must never be the profile of an ordinary run: it finds fewer bugs than ``dev`` and ``ci``.
"""

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "mutation",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
