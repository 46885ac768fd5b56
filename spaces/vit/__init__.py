"""The one adapter that knows timm's ViT insides (:mod:`.adapter`), the pure tensor maths
the knobs use (:mod:`.ops`), and importance scoring on calibration data (:mod:`.importance`)."""
