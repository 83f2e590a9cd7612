"""The one Jinja2 environment every channel renders through.

- ImmutableSandboxedEnvironment: a template (written by staff, reviewed less than code) can neither
  reach Python internals nor change what it is given: `{{ district.languages.clear() }}` would
  otherwise empty the settings of the running consumer. Event values are passed as data and never
  compiled, so `{{ 7*7 }}` in an event prints as typed.
- Bounded work: a render has `time_limit` seconds (enforced in the main thread, where consumers,
  `comms validate` and `comms preview` render), and `*`/`**` cannot build huge values in one step.
- StrictUndefined: a typo in a template is a RenderError, not a blank in a message to 300,000 families.
- HTML templates autoescape; Markdown templates escape Markdown syntax in every value (escape.py), so
  a draft opened in a Markdown previewer shows event text as text: no link, image, script or heading.
- A template error names the file and line where it is, and a missing template the file that asked.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from comms.channels import channel_class
from comms.errors import RenderError
from comms.events import in_language
from comms.render import formatting as f
from comms.render.escape import md_value

MAX_BUILT = 100_000  # items or characters one `*` may build; `**` exponents above 100 are refused


def template_paths(channel: str, template: str, lang: str) -> dict[str, str]:
    """Template file (relative to templates/) of each part a channel renders."""
    return {part: f"{channel}/{template}.{lang}.{part}.j2" for part in channel_class(channel).parts}


@dataclass(frozen=True, slots=True)
class Rendered:
    parts: dict[str, str]
    subject: str | None = None


@jinja2.pass_context
def _finalize(ctx: jinja2.runtime.Context, value: Any) -> Any:
    if ctx.name and ctx.name.endswith(".md.j2"):
        return md_value(value)
    return value


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError(f"exponent {right} is too large for a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_BUILT:
                    raise SecurityError(f"a template may not build more than {MAX_BUILT:,} items at once")
        return super().call_binop(context, operator, left, right)


class _RenderTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float, name: str) -> Iterator[None]:
    """Interrupt a render that runs longer than `seconds` (a template with nested loops over large
    ranges would hang the consumer). SIGALRM reaches pure-Python loops, which Jinja compiles to; it
    can only be used in the main thread, where every consumer renders: elsewhere no limit is set."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    active = True

    def interrupt(signum: int, frame: object) -> None:
        if active:  # a signal that lands after the render finished does nothing
            raise _RenderTimeout

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _RenderTimeout:
        raise RenderError(f"{name}: rendering took more than {seconds:g}s (a loop over too much?)") from None
    finally:
        active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(exc: BaseException, env: jinja2.Environment, templates_dir: Path) -> str:
    """file:line of the innermost template frame a render error came from."""
    root = templates_dir.resolve()
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if fr.filename.startswith(str(root))]
    if not frames:
        return ""
    fr = frames[-1]
    name = Path(fr.filename).relative_to(root).as_posix()
    try:  # the frame's line is the compiled Python's: the template maps it back to its own
        line = env.get_template(name).get_corresponding_lineno(fr.lineno or 0)
    except jinja2.TemplateError:
        line = fr.lineno or 0
    return f"{name}:{line}"


def describe_template_error(exc: BaseException, name: str, env: jinja2.Environment, templates_dir: Path) -> str:
    """One line naming the file and line of a template problem."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.name or exc.filename or name}:{exc.lineno}: syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        where = _where(exc, env, templates_dir)
        if not where or exc.name == name:
            return f"template {exc.name or name} is missing (run `comms validate`)"
        return f"{where}: asks for template {exc.name!r}, which is missing"
    where = _where(exc, env, templates_dir) or name
    return f"{where}: {exc.__class__.__name__}: {exc}"


def _template_name(node: nodes.Node, lang: str) -> str | None:
    """A referenced template's name: a constant, or built from constants and `lang`
    (`"_lang/" ~ lang ~ ".j2"`); None when it depends on anything else."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    if isinstance(node, nodes.Name) and node.name == "lang":
        return lang
    parts = node.nodes if isinstance(node, nodes.Concat) else None
    if isinstance(node, nodes.Add):
        parts = [node.left, node.right]
    if parts is None:
        return None
    names = [_template_name(p, lang) for p in parts]
    return None if None in names else "".join(names)  # type: ignore[arg-type]


def _lang(ctx: jinja2.runtime.Context) -> str:
    return str(ctx.get("lang", "en"))


class Renderer:
    def __init__(self, templates_dir: str | Path, time_limit: float = 5.0) -> None:
        self.templates_dir = Path(templates_dir)
        self.time_limit = time_limit
        env = _Sandbox(
            loader=jinja2.FileSystemLoader(str(self.templates_dir)),
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            undefined=jinja2.StrictUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.filters.update(
            date=jinja2.pass_context(lambda c, d, weekday=True: f.fmt_date(d, _lang(c), weekday)),
            time=jinja2.pass_context(lambda c, t: f.fmt_time(t, _lang(c))),
            days=jinja2.pass_context(lambda c, d: f.fmt_days(d, _lang(c))),
            join_list=jinja2.pass_context(lambda c, items: f.fmt_list(items, _lang(c))),
            grades=f.grade_span,
            lookup=lambda codes, table: [table[c] for c in codes],  # contract codes -> words of one language
            # a free-text field in this language, or None: the template then says the glossary's phrase
            local=jinja2.pass_context(lambda c, value: in_language(value, _lang(c))),
        )
        self.env = env

    def reads(self, channel: str, template: str, lang: str) -> frozenset[str]:
        """Every context variable the template's parts, and the templates they import, may read.

        A mass message whose template never reads `guardian` or `students` is the same text for every
        family of one language: the pipeline renders it once, not 300,000 times."""
        return self._reads(channel, template, lang)

    @cache  # noqa: B019 - one Renderer per process, templates fixed for its life
    def _reads(self, channel: str, template: str, lang: str) -> frozenset[str]:
        names, seen, found = list(template_paths(channel, template, lang).values()), set(), set()
        while names:
            name = names.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
                ast = self.env.parse(source, name, name)
            except jinja2.TemplateNotFound:
                continue  # render() names the missing file
            except jinja2.TemplateSyntaxError as exc:
                raise RenderError(describe_template_error(exc, name, self.env, self.templates_dir)) from None
            found |= jinja2.meta.find_undeclared_variables(ast)
            for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
                ref = _template_name(node.template, lang)  # type: ignore[attr-defined]  # each of the four has it
                if ref is None:  # a name computed from more than `lang`: assume it reads everything
                    return frozenset({"*"})
                names.append(ref)
        return frozenset(found)

    def exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def render(self, channel: str, template: str, lang: str, context: dict[str, Any]) -> Rendered:
        """Render every part of one channel's template; the subject (e-mail) is set by the template of
        the part its channel names (`Channel.subject_part`)."""
        parts: dict[str, str] = {}
        subject = None
        subject_part = channel_class(channel).subject_part
        # one timer for all the parts: two signal calls and two timer calls per render, not per part
        with _time_limit(self.time_limit, f"{channel}/{template}.{lang}"):
            for part, name in template_paths(channel, template, lang).items():
                parts[part], module = self._render_part(name, {**context, "lang": lang})
                if part == subject_part:
                    subject = getattr(module, "subject", None)
                    if not subject:
                        raise RenderError(f"{name}: an {channel} template must set `subject`")
                    subject = " ".join(str(subject).split())
        return Rendered(parts=parts, subject=subject)

    def _render_part(self, name: str, context: dict[str, Any]) -> tuple[str, Any]:
        try:
            module = self.env.get_template(name).make_module(context)
        except _RenderTimeout:
            raise
        except Exception as exc:  # a template bug of any kind: typed, with the file and line named
            raise RenderError(describe_template_error(exc, name, self.env, self.templates_dir)) from None
        return str(module).strip() + "\n", module
