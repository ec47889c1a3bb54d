"""Sample step: write a project variable (or fail, to test failure handling)."""


def run(ctx):
    if ctx.config["fail"]:
        raise RuntimeError("failing on purpose")
    ctx.project.variables.set(ctx.config["name"], ctx.config["value"])
