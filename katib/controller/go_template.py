"""A subset of Go's text/template, for the v1alpha3 `goTemplate` trial templates.

Katib v1alpha3 rendered `trialTemplate.goTemplate.rawTemplate` with Go's text/template
and the data `{Experiment, Trial, NameSpace, HyperParameters: [{Name, Value}]}` (reference
3.2). This renderer covers what such templates use, and what a person could reasonably add:

* text and actions `{{ pipeline }}`; `{{- ` and ` -}}` trim the whitespace around an action;
  comments `{{/* ... */}}`;
* values: `.`, `.Field.Sub`, `$`, `$.Field`, `$var`, `$var.Field`, string ("..." and
  `raw`), number, `true`, `false`, `nil` literals, parenthesised pipelines;
* pipelines with `|`, variable declaration `$x := ...` and assignment `$x = ...`;
* `if` / `else if` / `else`, `range` (lists and maps, `$i, $v :=`, `else`), `with` / `else`;
* functions `and or not len index eq ne lt le gt ge print printf println`.

Data are plain dicts, lists and scalars. A dict is read like a Go struct: a field it does
not have is an error (Go says "can't evaluate field"), so a misspelt `{{.Namespace}}` is
reported with its line and column and the fields that do exist, instead of rendering
`<no value>` into a manifest. Every error is an InvalidArgumentError whose message starts
with `line L, column C:`; `GoTemplateError` also carries both numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from katib.errors import InvalidArgumentError

_SPACE = " \t\r\n"


class GoTemplateError(InvalidArgumentError):
    """A template that cannot be parsed or executed; `line` and `column` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column
        self.reason = message


# --- lexing ----------------------------------------------------------------------------


@dataclass
class _Tok:
    kind: str  # field var string number bool nil ident ( ) | := = , dot
    text: str
    pos: int
    value: Any = None


@dataclass
class _Action:
    tokens: list[_Tok]
    pos: int  # offset of '{{' in the source


def _position(src: str, offset: int) -> tuple[int, int]:
    line = src.count("\n", 0, offset) + 1
    return line, offset - (src.rfind("\n", 0, offset) + 1) + 1


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<declare>:=)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[()|=,])
    """,
    re.VERBOSE,
)


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src

    def fail(self, offset: int, message: str) -> GoTemplateError:
        line, col = _position(self.src, offset)
        return GoTemplateError(message, line, col)

    def items(self) -> list[str | _Action]:
        """Text pieces and actions, with trim markers already applied to the text."""
        src = self.src
        out: list[str | _Action] = []
        pos = 0
        trim_next = False
        while True:
            start = src.find("{{", pos)
            text = src[pos:] if start < 0 else src[pos:start]
            if trim_next:
                text = text.lstrip(_SPACE)
            if start < 0:
                if text:
                    out.append(text)
                return out
            inner = start + 2
            if src.startswith("-", inner) and inner + 1 < len(src) and src[inner + 1] in _SPACE:
                text = text.rstrip(_SPACE)
                inner += 2
            if text:
                out.append(text)
            end, trim_next = self._action_end(start, inner)
            body = src[inner:end]
            if body.lstrip(_SPACE).startswith("/*"):
                stripped = body.strip(_SPACE)
                if not stripped.endswith("*/"):
                    raise self.fail(start, "a comment must end with */ right before }}")
            else:
                out.append(_Action(self._tokens(inner, end), start))
            pos = end + (4 if trim_next else 2)

    def _action_end(self, start: int, inner: int) -> tuple[int, bool]:
        """(offset of the closing ' -}}' or '}}', whether it trims)."""
        src = self.src
        i = inner
        lead = inner
        while lead < len(src) and src[lead] in _SPACE:
            lead += 1
        if src.startswith("/*", lead):
            close = src.find("*/", inner)
            if close < 0:
                raise self.fail(start, "unclosed comment")
            i = close + 2
        quote: str | None = None
        quote_at = i
        while i < len(src):
            ch = src[i]
            if quote is not None:
                if ch == "\\" and quote == '"':
                    i += 2
                    continue
                if ch == quote:
                    quote = None
                elif ch == "\n" and quote == '"':
                    raise self.fail(i, "unterminated quoted string")
            elif ch in '"`':
                quote, quote_at = ch, i
            elif src.startswith("}}", i):
                if i >= 2 and src[i - 1] == "-" and src[i - 2] in _SPACE and i - 2 >= inner:
                    return i - 2, True
                return i, False
            i += 1
        if quote is not None:
            raise self.fail(quote_at, "unterminated quoted string")
        raise self.fail(start, "unclosed action: missing }}")

    def _tokens(self, begin: int, end: int) -> list[_Tok]:
        src = self.src
        toks: list[_Tok] = []
        pos = begin
        while pos < end:
            m = _TOKEN.match(src, pos, end)
            if m is None:
                raise self.fail(pos, f"unexpected {src[pos]!r} in action")
            kind = m.lastgroup or ""
            text = m.group(0)
            if kind == "space":
                pass
            elif kind == "declare":
                toks.append(_Tok(":=", text, pos))
            elif kind == "string":
                toks.append(_Tok("string", text, pos, json.loads(text)))
            elif kind == "raw":
                toks.append(_Tok("string", text, pos, text[1:-1]))
            elif kind == "number":
                value: Any
                try:
                    value = int(text, 0)
                except ValueError:
                    value = float(text)
                toks.append(_Tok("number", text, pos, value))
            elif kind == "ident" and text in ("true", "false"):
                toks.append(_Tok("bool", text, pos, text == "true"))
            elif kind == "ident" and text == "nil":
                toks.append(_Tok("nil", text, pos, None))
            elif kind == "punct":
                toks.append(_Tok(text, text, pos))
            else:
                toks.append(_Tok(kind, text, pos))
            pos = m.end()
        return toks


# --- parsing ---------------------------------------------------------------------------


@dataclass
class _Pipeline:
    decl: list[str]
    assign: bool
    commands: list[list[Any]]  # each command: operands (_Tok or _Pipeline)
    pos: int


@dataclass
class _Chain:
    """`(pipeline).Field.Sub`: fields read from a parenthesised result."""

    pipe: _Pipeline
    fields: _Tok


@dataclass
class _Node:
    kind: str  # text action if range with
    pos: int = 0
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


_KEYWORDS = frozenset({"if", "range", "with", "else", "end", "define", "template", "block"})


class _Parser:
    def __init__(self, src: str) -> None:
        self.lexer = _Lexer(src)
        self.items = self.lexer.items()
        self.i = 0

    def fail(self, offset: int, message: str) -> GoTemplateError:
        return self.lexer.fail(offset, message)

    def parse(self) -> list[_Node]:
        nodes, stop = self.block()
        if stop is not None:
            word = stop.tokens[0].text
            raise self.fail(stop.pos, f"unexpected {{{{{word}}}}} outside if/range/with")
        return nodes

    def block(self) -> tuple[list[_Node], _Action | None]:
        """Nodes up to an unmatched {{else}} or {{end}} (returned) or the end (None)."""
        nodes: list[_Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                nodes.append(_Node("text", text=item))
                continue
            toks = item.tokens
            if not toks:
                raise self.fail(item.pos, "missing value for command")
            head = toks[0]
            word = head.text if head.kind == "ident" else ""
            if word in ("else", "end"):
                return nodes, item
            if word in ("if", "range", "with"):
                nodes.append(self.control(word, item))
            elif word in ("define", "template", "block"):
                raise self.fail(item.pos, f"{{{{{word}}}}} is not supported by this renderer")
            else:
                nodes.append(_Node("action", item.pos, pipe=self.pipeline(toks, item.pos)))
        return nodes, None

    def control(self, word: str, action: _Action, chained: bool = False) -> _Node:
        toks = action.tokens[1:] if not chained else action.tokens[2:]
        if not toks:
            raise self.fail(action.pos, f"missing value for {word}")
        node = _Node(
            word, action.pos, pipe=self.pipeline(toks, action.pos, allow_two=word == "range")
        )
        node.body, stop = self.block()
        if stop is None:
            raise self.fail(
                action.pos, f"unexpected end of template: {{{{{word}}}}} has no {{{{end}}}}"
            )
        stop_toks = stop.tokens
        if stop_toks[0].text == "else":
            if len(stop_toks) > 1:
                if word != "if" or stop_toks[1].text != "if":
                    raise self.fail(stop.pos, "only {{else if ...}} may follow {{else}} here")
                node.orelse = [self.control("if", stop, chained=True)]
                return node  # the chained if consumed the shared {{end}}
            node.orelse, stop = self.block()
            if stop is None or stop.tokens[0].text != "end":
                raise self.fail(action.pos, f"{{{{{word}}}}} has no {{{{end}}}}")
        if len(stop.tokens) > 1:
            raise self.fail(stop.tokens[1].pos, "unexpected text after end")
        return node

    def pipeline(self, toks: list[_Tok], pos: int, allow_two: bool = False) -> _Pipeline:
        decl: list[str] = []
        assign = False
        k = 0
        if toks and toks[0].kind == "var":
            if len(toks) > 1 and toks[1].kind in (":=", "="):
                decl, assign, k = [toks[0].text], toks[1].kind == "=", 2
            elif (
                allow_two
                and len(toks) > 3
                and toks[1].kind == ","
                and toks[2].kind == "var"
                and toks[3].kind == ":="
            ):
                decl, k = [toks[0].text, toks[2].text], 4
        commands: list[list[Any]] = [[]]
        rest = toks[k:]
        j = 0
        while j < len(rest):
            tok = rest[j]
            if tok.kind == "(":
                depth, end = 1, j + 1
                while end < len(rest) and depth:
                    depth += {"(": 1, ")": -1}.get(rest[end].kind, 0)
                    end += 1
                if depth:
                    raise self.fail(tok.pos, "unclosed left paren")
                inner: Any = self.pipeline(rest[j + 1 : end - 1], tok.pos)
                after = rest[end] if end < len(rest) else None
                if (
                    after is not None
                    and after.kind == "field"
                    and after.pos == rest[end - 1].pos + 1
                ):
                    inner = _Chain(inner, after)  # (pipeline).Field
                    end += 1
                commands[-1].append(inner)
                j = end
                continue
            if tok.kind == ")":
                raise self.fail(tok.pos, "unexpected right paren")
            if tok.kind == "|":
                if not commands[-1]:
                    raise self.fail(tok.pos, "missing command before |")
                commands.append([])
            elif tok.kind in (":=", "=", ","):
                raise self.fail(tok.pos, f"unexpected {tok.text!r}")
            elif tok.kind == "ident" and tok.text in _KEYWORDS:
                raise self.fail(tok.pos, f"unexpected {tok.text!r} in command")
            else:
                commands[-1].append(tok)
            j += 1
        if not commands[-1]:
            raise self.fail(toks[-1].pos if toks else pos, "missing value for command")
        return _Pipeline(decl, assign, commands, toks[0].pos if toks else pos)


# --- execution -------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def format_value(value: Any) -> str:
    """Go's %v for the value kinds templates see."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{format_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _printf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%" or i + 1 >= len(fmt):
            out.append(ch)
            i += 1
            continue
        m = re.match(r"%([-+ 0#]*\d*(?:\.\d+)?)([vsdqfgxe%])", fmt[i:])
        if m is None:
            out.append(ch)
            i += 1
            continue
        flags, verb = m.group(1), m.group(2)
        i += m.end()
        if verb == "%":
            out.append("%")
            continue
        arg = next(it, None)
        if verb in ("v", "s"):
            out.append(("%" + flags + "s") % format_value(arg))
        elif verb == "q":
            out.append(json.dumps(format_value(arg)))
        else:
            try:
                out.append(("%" + flags + verb) % arg)
            except (TypeError, ValueError):
                out.append(f"%!{verb}({format_value(arg)})")
    return "".join(out)


def _compare(op: str) -> Callable[..., bool]:
    def run(a: Any, *others: Any) -> bool:
        if op == "eq":
            return any(a == b for b in others)
        b = others[0]
        if op == "ne":
            return bool(a != b)
        if isinstance(a, bool) or isinstance(b, bool) or type(a) is not type(b):
            both_numbers = all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)
            )
            if not both_numbers:
                raise TypeError(f"incompatible types for comparison: {a!r} and {b!r}")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]

    return run


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key)
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise IndexError(f"index out of range: {key}")
            item = item[key]
        else:
            raise TypeError(f"can't index item of type {type(item).__name__}")
    return item


_FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "index": _index,
    "eq": _compare("eq"),
    "ne": _compare("ne"),
    "lt": _compare("lt"),
    "le": _compare("le"),
    "gt": _compare("gt"),
    "ge": _compare("ge"),
    "print": lambda *a: "".join(format_value(v) for v in a),
    "println": lambda *a: " ".join(format_value(v) for v in a) + "\n",
    "printf": lambda fmt, *a: _printf(str(fmt), *a),
}


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "struct"
    if isinstance(value, (list, tuple)):
        return "list"
    return {str: "string", bool: "bool", int: "int", float: "float64"}.get(type(value), "nil")


class _Exec:
    def __init__(self, src: str, data: Any) -> None:
        self.src = src
        self.root = data
        self.scopes: list[dict[str, Any]] = [{"$": data}]

    def fail(self, offset: int, message: str) -> GoTemplateError:
        line, col = _position(self.src, offset)
        return GoTemplateError(message, line, col)

    def run(self, nodes: Sequence[_Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipe is not None
            if node.kind == "action":
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    out.append(format_value(value))
            elif node.kind == "if":
                self.scoped(
                    node.body if _truth(self.pipeline(node.pipe, dot)) else node.orelse, dot, out
                )
            elif node.kind == "with":
                value = self.pipeline(node.pipe, dot, declare=False)
                self.scoped(
                    node.body if _truth(value) else node.orelse,
                    value if _truth(value) else dot,
                    out,
                    node.pipe.decl,
                    [value],
                )
            else:
                self.range(node, dot, out)

    def scoped(
        self,
        nodes: Sequence[_Node],
        dot: Any,
        out: list[str],
        names: Sequence[str] = (),
        values: Sequence[Any] = (),
    ) -> None:
        self.scopes.append(dict(zip(names, values, strict=False)))
        try:
            self.run(nodes, dot, out)
        finally:
            self.scopes.pop()

    def range(self, node: _Node, dot: Any, out: list[str]) -> None:
        assert node.pipe is not None
        value = self.pipeline(node.pipe, dot, declare=False)
        if isinstance(value, Mapping):
            pairs = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]
        elif value is None:
            pairs = []
        else:
            raise self.fail(node.pos, f"range can't iterate over {format_value(value)}")
        if not pairs:
            self.scoped(node.orelse, dot, out)
            return
        decl = node.pipe.decl
        for key, item in pairs:
            names_values = [item] if len(decl) == 1 else [key, item]
            self.scoped(node.body, item, out, decl, names_values)

    def lookup_var(self, tok: _Tok) -> Any:
        name, _, rest = tok.text.partition(".")
        for scope in reversed(self.scopes):
            if name in scope:
                value = scope[name]
                break
        else:
            raise self.fail(tok.pos, f"undefined variable: {name}")
        return self.fields(value, rest.split(".") if rest else [], tok)

    def fields(self, value: Any, names: list[str], tok: _Tok) -> Any:
        for name in names:
            if isinstance(value, Mapping):
                if name not in value:
                    known = ", ".join(sorted(str(k) for k in value)) or "none"
                    raise self.fail(
                        tok.pos,
                        f"can't evaluate field {name} in {tok.text} (fields: {known})",
                    )
                value = value[name]
            else:
                raise self.fail(tok.pos, f"can't evaluate field {name} in type {_type_name(value)}")
        return value

    def operand(self, op: Any, dot: Any) -> Any:
        if isinstance(op, _Pipeline):
            return self.pipeline(op, dot)
        if isinstance(op, _Chain):
            return self.fields(
                self.pipeline(op.pipe, dot), op.fields.text[1:].split("."), op.fields
            )
        tok: _Tok = op
        if tok.kind in ("string", "number", "bool", "nil"):
            return tok.value
        if tok.kind == "dot":
            return dot
        if tok.kind == "field":
            return self.fields(dot, tok.text[1:].split("."), tok)
        if tok.kind == "var":
            return self.lookup_var(tok)
        if tok.kind == "ident":
            raise self.fail(tok.pos, f"{tok.text} is a function and needs to be called first")
        raise self.fail(tok.pos, f"unexpected {tok.text!r}")

    def command(self, cmd: list[Any], dot: Any, piped: list[Any]) -> Any:
        head = cmd[0]
        if isinstance(head, _Tok) and head.kind == "ident":
            name = head.text
            if name in ("and", "or"):
                args = [*cmd[1:]]
                values = [self.operand(a, dot) for a in args] + piped
                if not values:
                    raise self.fail(head.pos, f"wrong number of args for {name}")
                for v in values:
                    if (name == "and") != _truth(v):
                        return v
                return values[-1]
            func = _FUNCS.get(name)
            if func is None:
                raise self.fail(head.pos, f'function "{name}" not defined')
            args = [self.operand(a, dot) for a in cmd[1:]] + piped
            try:
                return func(*args)
            except (TypeError, IndexError, KeyError, ValueError) as exc:
                raise self.fail(head.pos, f"error calling {name}: {exc}") from None
        if len(cmd) > 1 or piped:
            what = head.text if isinstance(head, _Tok) else "(...)"
            raise self.fail(
                head.pos,
                f"can't give argument to non-function {what}",
            )
        return self.operand(head, dot)

    def pipeline(self, pipe: _Pipeline, dot: Any, declare: bool = True) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe.commands):
            value = self.command(cmd, dot, [value] if i else [])
        if pipe.decl and declare:
            name = pipe.decl[0]
            if pipe.assign:
                for scope in reversed(self.scopes):
                    if name in scope:
                        scope[name] = value
                        break
                else:
                    raise self.fail(pipe.pos, f"undefined variable: {name}")
            else:
                self.scopes[-1][name] = value
        return value


@dataclass
class GoTemplate:
    """A parsed template; `render(data)` may be called many times."""

    source: str
    nodes: list[_Node]

    def render(self, data: Any) -> str:
        out: list[str] = []
        _Exec(self.source, data).run(self.nodes, data, out)
        return "".join(out)


_PARSED: dict[str, GoTemplate] = {}


def parse_template(source: str) -> GoTemplate:
    """Parse (and cache) a template; GoTemplateError names the line and column."""
    found = _PARSED.get(source)
    if found is None:
        found = GoTemplate(source, _Parser(source).parse())
        if len(_PARSED) < 256:
            _PARSED[source] = found
    return found


def render(source: str, data: Any) -> str:
    """Render `source` with `data` (dicts are read like Go structs)."""
    return parse_template(source).render(data)


# --- the v1alpha3 trial template data --------------------------------------------------


def trial_data(
    experiment_name: str,
    trial_name: str,
    namespace: str,
    assignments: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The data v1alpha3's generator gave a goTemplate (reference 3.2)."""
    return {
        "Experiment": experiment_name,
        "Trial": trial_name,
        "NameSpace": namespace,
        "HyperParameters": [{"Name": name, "Value": value} for name, value in assignments],
    }
