"""Recipe: copy a dataset chunk by chunk, adding `<column>_words`."""

import wordlib


def param_choices(name, registry):
    """selectChoices of the params marked "getChoicesFromPython" (None: keep the JSON's)."""
    if name == "case":
        return [{"value": case, "label": case} for case in wordlib.CASES]
    return None


def run(ctx):
    src, out = ctx.input("input"), ctx.output("output")
    column = ctx.config["column"]
    change_case = wordlib.CASES[ctx.config["case"]]
    first, rows = True, 0
    for chunk in ctx.progress(src.iter_chunks(1000), "counting words", total=None):
        chunk[f"{column}_words"] = chunk[column].map(wordlib.count_words)
        chunk[column] = chunk[column].map(lambda t: change_case(t) if isinstance(t, str) else t)
        if first:
            out.write(chunk)
            first = False
        else:
            out.append(chunk)
        rows += len(chunk)
    ctx.details["rows"] = rows
