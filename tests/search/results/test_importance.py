"""Optuna's knob importances in the report: over evaluated, non-duplicate trials only."""

def test_too_few_trials_for_importance(run_dir):
    import optuna

    from vitsearch.search.results.report import knob_importances
    from vitsearch.search.results.runview import load_run

    view = load_run(run_dir)
    small = optuna.create_study(directions=["maximize", "minimize"])
    small.add_trials(view.study.trials[:2])
    view.study = small
    importances, why = knob_importances(view)
    assert importances == {} and why.startswith("not computed")


def test_importance_leaves_out_the_duplicates_of_trial_0(run_dir):
    import copy

    import optuna

    from vitsearch.search.results.report import knob_importances
    from vitsearch.search.results.runview import load_run

    view = load_run(run_dir)
    fresh = [t for t in view.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
             if (t.user_attrs.get("evaluation") or {}).get("accuracy") is not None and t.params
             and t.user_attrs.get("reused_from") is None]
    source = next(t for t in fresh if t.number == 0)
    dupes = [copy.deepcopy(source) for _ in range(2)]
    for d in dupes:
        d.set_user_attr("reused_from", 0)  # the first trial's number, falsy: still a duplicate
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials(fresh + dupes)
    view.study = study
    _, how = knob_importances(view)
    assert f"over {len(fresh)} completed" in how
