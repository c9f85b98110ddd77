"""transform and condition: reshaping data and choosing a branch, with the safe expressions."""

from app.workflows.expressions import ExpressionError, evaluate, parse_expression, render


def _failed(message):
    from app.workflows.steps import StepFailed

    return StepFailed(message)


def run_transform(context):
    """Apply pick, rename, map and filter in order to an object or a list of objects."""
    value = context.config.get("input")
    for number, operation in enumerate(context.config.get("operations") or []):
        name, argument = next(iter(operation.items()))
        try:
            value = _apply(name, argument, value, context)
        except ExpressionError as error:
            raise _failed(f"operation {number} ({name}): {error}") from None
        context.log(f"{name}: {_describe(value)}")
    if isinstance(value, dict):
        return value
    return {"items": value, "count": len(value) if isinstance(value, list) else None}


def _describe(value):
    if isinstance(value, list):
        return f"{len(value)} items"
    if isinstance(value, dict):
        return f"fields {', '.join(sorted(value)[:10])}"
    return type(value).__name__


def _each(value, func):
    if isinstance(value, list):
        return [func(item) for item in value]
    return func(value)


def _as_object(item):
    return item if isinstance(item, dict) else {"value": item}


def _apply(name, argument, value, context):
    if name == "pick":
        return _each(value, lambda item: {key: item[key] for key in argument if isinstance(item, dict) and key in item})
    if name == "rename":
        return _each(value, lambda item: {argument.get(key, key): inner for key, inner in _as_object(item).items()})
    if name == "map":
        # Map templates are rendered per item, with `item` bound to it.
        return _each(value, lambda item: {**_as_object(item), **render(argument, {**context.values, "item": item})})
    tree = parse_expression(argument)
    items = value if isinstance(value, list) else [value]
    kept = [item for item in items if evaluate(tree, {**context.values, "item": item})]
    return kept if isinstance(value, list) else (kept[0] if kept else None)


def run_condition(context):
    expression = context.step["config"]["if"]
    try:
        result = bool(evaluate(parse_expression(expression), context.values))
    except ExpressionError as error:
        raise _failed(str(error)) from None
    branch = "then" if result else "else"
    context.log(f"{expression} → {str(result).lower()}; taking the {branch} branch")
    return {"result": result, "branch": branch}
