def evaluate_folders(*a, **k):
    raise NotImplementedError


class EvaluationError(ValueError):
    pass
