"""`edgedistill fit`: search the student that fits a target's budgets, measured on the target itself.

    from edgedistill.config import load_config
    from edgedistill.fit import fit
    from edgedistill.pipeline import RunRecipe

    report = fit(load_config(RunRecipe, "examples/fit.yaml"), "runs/fit")   # report["exit_code"]

Where things are: `config` (the `fit:` section), `space` (shapes, refused all at once),
`data` (the validation split carved from the training data), `cost` and `phases` (screening on
the device, cached), `proxy` (the Optuna study: rungs, successive halving, storage), `search`
(the verb, read as its phases), `report` (fit_report.json, candidates.md, pareto.png), `cli`.

Importing this package imports pydantic only: optuna, torch and the runtimes load when a phase runs.
"""

from __future__ import annotations

from edgedistill.plugins import lazy_exports

_EXPORTS = {
    "fit": "edgedistill.fit.search",
    "NoCandidateError": "edgedistill.fit.search",
    "FitConfig": "edgedistill.fit.config",
    "SearchSpace": "edgedistill.fit.config",
    "ExportChoice": "edgedistill.fit.config",
    "Shape": "edgedistill.fit.space",
    "plan_shapes": "edgedistill.fit.space",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
