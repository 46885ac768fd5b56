"""How the searcher asks Optuna for one candidate, and when the ask is a random draw instead.

:class:`Asker` is what :class:`~vitsearch.search.engine.searcher.CandidateSearch` asks
every trial through, one at a time:

* **Owned, keyed, judged.** With an :class:`~vitsearch.search.engine.ownership.Ownership`
  the trial is claimed (a dead driver's WAITING retry first) and owned until told; its
  config's key is written to it before :func:`vitsearch.search.engine.sharing.verdict`
  reads the other trials' keys (surplus, reuse, duplicate). A trial that another driver
  failed as stale while it was being asked is released and skipped.
* **Random draws.** A candidate settled on its cost is told PRUNED, so a sampler that
  learns from COMPLETE trials only (GP, NSGA-II) may keep proposing settled candidates:
  after :data:`RANDOM_AFTER` asks in a row with nothing to evaluate, every ask takes a
  random draw not asked before, until one is evaluated.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import optuna

from vitsearch.search.engine import sharing
from vitsearch.search.engine.promotions import config_key
from vitsearch.search.results.tables import ATTR_CONFIG

log = logging.getLogger("vitsearch.run")

#: asks in a row that found nothing to evaluate (settled, reused, duplicate) after which every ask takes a random
#: draw of the space not asked before, until one is evaluated: GP and NSGA-II learn from COMPLETE trials only, so a
#: sampler proposing near settled candidates keeps proposing them (docs/search.md: what the sampler is told)
RANDOM_AFTER = 16
#: random draws tried for one not asked before
RANDOM_TRIES = 32


class Asker:
    """Asks ``study`` for trials over ``distributions`` (the ``space``'s), owned through ``ownership`` (or None).

    ``seed`` seeds the random draws (a stream of its own, not the sampler's).
    """

    def __init__(self, study: optuna.Study, space, distributions: dict, ownership, seed: int | None):
        self.study = study
        self.space = space
        self.distributions = distributions
        self.ownership = ownership
        self._draws = random.Random(f"vitsearch-draws:{seed}")  # not the sampler's own stream (seeded alike)

    def ask(self, target: int, idle_asks: int) -> tuple[optuna.Trial, Any, sharing.Verdict] | None:
        """One trial asked, its config and sharing's verdict on it for ``target``; None where another driver failed
        it as stale meanwhile (released: nothing of it is this driver's). ``idle_asks``: asks in a row that found
        nothing to evaluate; from :data:`RANDOM_AFTER` on, the trial is a random draw not asked before."""
        trial = None
        if idle_asks >= RANDOM_AFTER:
            self._draw_at_random(idle_asks)
        try:
            trial = (self.ownership.ask(self.distributions) if self.ownership is not None  # claimed, then drawn
                     else self.study.ask(fixed_distributions=self.distributions))
            config = self.space.config_from_params(trial.params)
            key = config_key(config.to_dict())
            trial.set_user_attr(ATTR_CONFIG, key)  # written before the check reads the others' (sharing.py)
            return trial, config, sharing.verdict(self.study, trial, key, target)
        except optuna.exceptions.UpdateFinishedTrialError:
            # this driver was stopped mid-ask for longer than the grace period and another driver
            # failed the trial as stale (its retry is WAITING): nothing of it is this driver's now
            if trial is not None and self.ownership is not None:
                self.ownership.release(trial)
            log.warning("a trial being asked was failed as stale by another driver meanwhile; asking again")
            return None

    def _draw_at_random(self, idle_asks: int) -> None:
        """Enqueue a random draw of the space that no trial of the study asked before (the next ask takes it, as a
        WAITING trial): the sampler's last ``idle_asks`` (:data:`RANDOM_AFTER` or more) proposals found nothing to
        evaluate."""
        known = {t.user_attrs.get(ATTR_CONFIG) for t in self.study.get_trials(deepcopy=False)}
        for _ in range(RANDOM_TRIES):
            params = {name: _draw(dist, self._draws) for name, dist in self.distributions.items()}
            if config_key(self.space.config_from_params(params).to_dict()) not in known:
                self.study.enqueue_trial(params)
                log.info("the sampler's last %d proposals found nothing to evaluate (settled or repeated): the next "
                         "is drawn at random", idle_asks)
                return


def _draw(distribution, rng: random.Random):
    """One value of an Optuna ``distribution`` (the space's: categorical and integer), uniformly."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return rng.choice(distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution) and not distribution.log:
        return rng.randrange(distribution.low, distribution.high + 1, distribution.step)
    raise TypeError(f"no random draw for {distribution!r}")
