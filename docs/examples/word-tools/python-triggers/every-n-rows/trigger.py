"""Trigger: fires every `n` new rows of a dataset; `ctx.state` remembers the count it fired at."""


def check(ctx):
    dataset = ctx.project.dataset(ctx.config["dataset"])
    rows = dataset.count() if dataset.exists() else 0
    if rows - ctx.state.get("rows", 0) >= ctx.config["n"]:
        ctx.state["rows"] = rows  # kept in the database between checks (and processes)
        return True
    return False
