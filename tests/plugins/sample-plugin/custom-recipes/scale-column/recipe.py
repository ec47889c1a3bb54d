"""Sample recipe: multiply a numeric column by a factor, chunk by chunk."""


def run(ctx):
    src = ctx.input("input")
    out = ctx.output("output")
    column, factor = ctx.config["column"], ctx.config["factor"]
    if column not in src.columns:
        raise ValueError(f"no column {column!r} in {src.name}")
    first = True
    for chunk in ctx.progress(src.iter_chunks(1000), "scaling", total=None):
        target = column if ctx.config["mode"] == "replace" else f"{column}_scaled"
        chunk[target] = chunk[column] * factor
        if first:
            out.write(chunk)
            first = False
        else:
            out.append(chunk)
    ctx.details["rows"] = src.count()
