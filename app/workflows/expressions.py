"""The safe template and expression language of workflow definitions.

Templates: `{{ trigger.path }}`, `{{ steps.build.output.status }}`, `{{ item.name }}` inside any
string of a step's config. A string that is exactly one template takes the referenced value with
its JSON type; a template inside a longer string is replaced by the value's text.

Expressions (conditions, transform filters): comparisons of references and literals joined by
`and`, `or`, `not` and parentheses, e.g. `trigger.size > 1000 and item.name startswith 'report'`.

Nothing is evaluated as Python: a small tokenizer and a recursive-descent parser accept only
references, literals and the operators listed in OPERATORS.
"""

import fnmatch
import json
import re

ROOTS = ("trigger", "steps", "item", "run")
OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "contains", "in", "startswith", "endswith", "matches")
WORD_OPERATORS = ("contains", "in", "startswith", "endswith", "matches")
TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.(?:[A-Za-z_][A-Za-z0-9_-]*|\d+))*$")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|<|>|\(|\))
      | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
    )""",
    re.VERBOSE,
)
MISSING = None


class ExpressionError(ValueError):
    """An invalid template or expression; the message names the text and what is wrong."""


def parse_path(text):
    """Split `steps.build.output.status` into its parts, or raise ExpressionError."""
    if not _PATH.match(text):
        raise ExpressionError(f"{text!r} is not a reference; write e.g. trigger.path or steps.ID.output.FIELD")
    parts = text.split(".")
    if parts[0] not in ROOTS:
        raise ExpressionError(f"{text!r} starts with {parts[0]!r}; references start with one of {', '.join(ROOTS)}")
    if parts[0] == "steps" and (len(parts) < 3 or parts[2] not in ("output", "status")):
        raise ExpressionError(f"{text!r} must read steps.ID.output[.FIELD] or steps.ID.status")
    return parts


def resolve_path(parts, context):
    """Look a reference up in the context; a missing key or index gives None."""
    value = context
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def template_references(value):
    """Yield the parts of every reference in the templates of a config value (for validation)."""
    if isinstance(value, str):
        for match in TEMPLATE.finditer(value):
            yield parse_path(match.group(1))
    elif isinstance(value, dict):
        for item in value.values():
            yield from template_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from template_references(item)


def render(value, context):
    """Replace templates in a config value (recursively through dicts and lists)."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def _render_string(text, context):
    if "{{" not in text:
        return text
    whole = TEMPLATE.fullmatch(text.strip())
    if whole:
        return resolve_path(parse_path(whole.group(1)), context)

    def replace(match):
        found = resolve_path(parse_path(match.group(1)), context)
        if found is None:
            return ""
        if isinstance(found, dict | list):
            return json.dumps(found, sort_keys=True)
        if isinstance(found, bool):
            return "true" if found else "false"
        return str(found)

    return TEMPLATE.sub(replace, text)


def _tokenize(text):
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ExpressionError(f"unexpected text {text[position:].strip()[:30]!r} in expression {text!r}")
        position = match.end()
        kind = match.lastgroup
        raw = match.group(kind)
        if kind == "number":
            tokens.append(("literal", float(raw) if "." in raw else int(raw)))
        elif kind == "string":
            tokens.append(("literal", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "op":
            tokens.append(("op", raw))
        elif raw in ("and", "or", "not") or raw in WORD_OPERATORS:
            tokens.append(("op", raw))
        elif raw in ("true", "false", "null"):
            tokens.append(("literal", {"true": True, "false": False, "null": None}[raw]))
        else:
            tokens.append(("path", parse_path(raw)))
    return tokens


class _Parser:
    """Recursive descent over the tokens; builds a small tree of tuples."""

    def __init__(self, text):
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def parse(self):
        if not self.tokens:
            raise ExpressionError("the expression is empty")
        tree = self._or()
        if self.position != len(self.tokens):
            raise ExpressionError(
                f"unexpected {self._describe(self.tokens[self.position])} in expression {self.text!r}"
            )
        return tree

    def _peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take_op(self, *names):
        token = self._peek()
        if token and token[0] == "op" and token[1] in names:
            self.position += 1
            return token[1]
        return None

    def _or(self):
        left = self._and()
        while self._take_op("or"):
            left = ("or", left, self._and())
        return left

    def _and(self):
        left = self._not()
        while self._take_op("and"):
            left = ("and", left, self._not())
        return left

    def _not(self):
        if self._take_op("not"):
            return ("not", self._not())
        return self._comparison()

    def _comparison(self):
        left = self._operand()
        operator = self._take_op(*OPERATORS)
        if operator is None:
            return ("truthy", left)
        return ("compare", operator, left, self._operand())

    def _operand(self):
        token = self._peek()
        if token is None:
            raise ExpressionError(f"expression {self.text!r} ends where a value was expected")
        if token == ("op", "("):
            self.position += 1
            inner = self._or()
            if not self._take_op(")"):
                raise ExpressionError(f"missing ')' in expression {self.text!r}")
            return inner
        if token[0] in ("literal", "path"):
            self.position += 1
            return token
        raise ExpressionError(f"unexpected {self._describe(token)} in expression {self.text!r}")

    @staticmethod
    def _describe(token):
        return f"{token[1]!r}" if token[0] != "path" else f"reference {'.'.join(token[1])!r}"


def parse_expression(text):
    """Parse an expression into a tree, or raise ExpressionError naming the problem."""
    if not isinstance(text, str):
        raise ExpressionError('an expression must be a string, e.g. "trigger.size > 100"')
    return _Parser(text).parse()


def expression_references(tree):
    """Yield the reference parts used by a parsed expression."""
    kind = tree[0]
    if kind == "path":
        yield tree[1]
    elif kind in ("and", "or"):
        yield from expression_references(tree[1])
        yield from expression_references(tree[2])
    elif kind in ("not", "truthy"):
        yield from expression_references(tree[1])
    elif kind == "compare":
        yield from expression_references(tree[2])
        yield from expression_references(tree[3])


def evaluate(tree, context):
    """Evaluate a parsed expression to a bool (or an operand's value)."""
    kind = tree[0]
    if kind == "literal":
        return tree[1]
    if kind == "path":
        return resolve_path(tree[1], context)
    if kind == "and":
        return bool(evaluate(tree[1], context)) and bool(evaluate(tree[2], context))
    if kind == "or":
        return bool(evaluate(tree[1], context)) or bool(evaluate(tree[2], context))
    if kind == "not":
        return not evaluate(tree[1], context)
    if kind == "truthy":
        return bool(evaluate(tree[1], context))
    return _compare(tree[1], evaluate(tree[2], context), evaluate(tree[3], context))


def _compare(operator, left, right):
    if operator == "==":
        return left == right
    if operator == "!=":
        return left != right
    if operator in ("contains", "in"):
        container, member = (left, right) if operator == "contains" else (right, left)
        if isinstance(container, str) and isinstance(member, str) or isinstance(container, list | dict):
            return member in container
        return False
    if operator in ("startswith", "endswith", "matches"):
        if not isinstance(left, str) or not isinstance(right, str):
            return False
        if operator == "matches":
            return fnmatch.fnmatchcase(left, right)
        return left.startswith(right) if operator == "startswith" else left.endswith(right)
    if left is None or right is None:
        return False
    numbers = (int, float)
    if not (isinstance(left, numbers) and isinstance(right, numbers)) and type(left) is not type(right):
        raise ExpressionError(f"cannot compare {type(left).__name__} {left!r} with {type(right).__name__} {right!r}")
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right
