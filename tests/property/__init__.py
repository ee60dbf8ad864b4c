"""Property tests (hypothesis) of box conversion, warping, NMS, evaluators and selective search."""
