"""Sample trigger: fires once per appearance of a flag file."""


def check(ctx):
    flag = ctx.project.dir / ctx.config["filename"]
    if flag.exists():
        flag.unlink()
        ctx.state["fired"] = ctx.state.get("fired", 0) + 1
        return True
    return False
