"""Built-in device targets and their budgets (YAML files beside this module)."""
