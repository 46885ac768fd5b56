"""The device profile: ``vitsearch profile`` measures a study's device and fits its predictor.

The run (:mod:`.run`) over the dir's identity (:mod:`.context`) and table (:mod:`.store`),
the configs it samples (:mod:`.sampling`) and the components it times (:mod:`.components`),
per runtime (:mod:`.programs`); the fit (:mod:`.fitting`), the sitting spread
(:mod:`.sitting`), ``--refine`` (:mod:`.refine`) and ``predictor-eval`` (:mod:`.evaluate`).
"""
