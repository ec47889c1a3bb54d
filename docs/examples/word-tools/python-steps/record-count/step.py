"""Step: write a dataset's row count into a project variable."""


def run(ctx):
    rows = ctx.project.dataset(ctx.config["dataset"]).count()
    ctx.project.variables.set(ctx.config["variable"], rows)
    ctx.details["rows"] = rows
