"""A plugin shipped as a Python package: its components come from `register_components`.

Installed through the entry-point group `labelloop` (or registered directly with
`PluginRegistry.register_plugin`), it uses only the host's public API.
"""

from labelloop.hookspecs import hookimpl


def add_constant(ctx) -> None:
    """Copy the input dataset, adding a column that holds `value` on every row."""
    src, out = ctx.input("input"), ctx.output("output")
    frame = src.read()
    frame[ctx.config["column"]] = ctx.config["value"]
    out.write(frame)
    ctx.details["rows"] = len(frame)


def describe_model(ctx) -> None:
    """Write one row per version of the input saved model."""
    model, out = ctx.input("model"), ctx.output("output")
    import pandas as pd

    out.write(pd.DataFrame([{"version": v["version"]} for v in model.versions()]))


ADD_CONSTANT = {
    "kind": "recipe",
    "id": "add-constant",
    "meta": {"label": "Add a constant column"},
    "inputRoles": [{"name": "input", "arity": "UNARY", "required": True}],
    "outputRoles": [{"name": "output", "arity": "UNARY", "required": True}],
    "params": [
        {"name": "column", "type": "STRING", "label": "Column", "defaultValue": "constant"},
        {"name": "value", "type": "INT", "label": "Value", "mandatory": True, "minI": 0, "maxI": 100},
    ],
}

# A role that takes only a saved model (DSS: acceptsDataset false, acceptsSavedModel true).
DESCRIBE_MODEL = {
    "kind": "recipe",
    "id": "describe-model",
    "meta": {"label": "Describe a saved model"},
    "inputRoles": [{"name": "model", "arity": "UNARY", "required": True,
                    "acceptsDataset": False, "acceptsSavedModel": True}],
    "outputRoles": [{"name": "output", "arity": "UNARY", "required": True}],
    "params": [],
}


@hookimpl
def register_components(register):
    register({**ADD_CONSTANT, "run": add_constant})
    register({**DESCRIBE_MODEL, "run": describe_model})
