"""How fast a model is: the measurement protocol (:mod:`.measure`, :mod:`.timing`), the
device lock and fingerprint, the device profile (:mod:`.profile`, :mod:`.components`), and
the latency predictor with its fit and evaluation (:mod:`.predictor`, :mod:`.fit`,
:mod:`.residual`, :mod:`.evaluate`)."""
