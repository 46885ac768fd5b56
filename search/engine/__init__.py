"""The Optuna x Ray Tune engine: run planning (:mod:`.plan`), the driver, the searcher
that asks and tells Optuna, Ray workers, cheap feasibility checks, the engine's books, and
the sampler benchmark."""
