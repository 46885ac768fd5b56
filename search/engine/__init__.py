"""The Optuna x Ray Tune engine: run planning (:mod:`.plan`), the driver's loop (:mod:`.driver`) with
its start-up, progress and summary beside it, the searcher that asks and tells Optuna, Ray
workers, cheap feasibility checks, the engine's books, the sampler benchmark, and the one
adapter to Ray Tune's and Optuna's private state (:mod:`.optuna_access`)."""
