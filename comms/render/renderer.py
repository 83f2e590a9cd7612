"""The one Jinja2 environment every channel renders through.

- SandboxedEnvironment: a template (written by staff, reviewed less than code) cannot reach Python
  internals; event values are passed as data and are never compiled, so `{{ 7*7 }}` in an event prints
  as typed.
- StrictUndefined: a typo in a template is a RenderError, not a blank in a message to 300,000 families.
- HTML templates autoescape; Markdown templates escape `<` and `>` so a draft opened in a Markdown
  previewer cannot run a script that arrived inside an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from comms.config import CHANNEL_PARTS
from comms.errors import RenderError
from comms.render import formatting as f


def template_paths(channel: str, template: str, lang: str) -> dict[str, str]:
    """Template file (relative to templates/) of each part a channel renders."""
    return {part: f"{channel}/{template}.{lang}.{part}.j2" for part in CHANNEL_PARTS[channel]}


@dataclass(frozen=True, slots=True)
class Rendered:
    parts: dict[str, str]
    subject: str | None = None


@jinja2.pass_context
def _finalize(ctx: jinja2.runtime.Context, value: Any) -> Any:
    if ctx.name and ctx.name.endswith(".md.j2") and isinstance(value, str) and not isinstance(value, Markup):
        return value.replace("<", "&lt;").replace(">", "&gt;")
    return value


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
    return ctx.get("lang", "en")


class Renderer:
    def __init__(self, templates_dir: str | Path) -> None:
        self.templates_dir = Path(templates_dir)
        env = SandboxedEnvironment(
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
            except jinja2.TemplateNotFound:
                continue  # render() names the missing file
            ast = self.env.parse(source)
            found |= jinja2.meta.find_undeclared_variables(ast)
            for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
                ref = _template_name(node.template, lang)
                if ref is None:  # a name computed from more than `lang`: assume it reads everything
                    return frozenset({"*"})
                names.append(ref)
        return frozenset(found)

    def exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def render(self, channel: str, template: str, lang: str, context: dict[str, Any]) -> Rendered:
        """Render every part of one channel's template; email takes its subject from the txt part."""
        parts: dict[str, str] = {}
        subject = None
        for part, name in template_paths(channel, template, lang).items():
            try:
                module = self.env.get_template(name).make_module({**context, "lang": lang})
            except jinja2.TemplateNotFound:
                raise RenderError(f"template {name} is missing (run `comms validate`)") from None
            except Exception as exc:  # a template bug of any kind: typed, with the file named
                raise RenderError(f"{name}: {exc.__class__.__name__}: {exc}") from None
            parts[part] = str(module).strip() + "\n"
            if channel == "email" and part == "txt":
                subject = getattr(module, "subject", None)
                if not subject:
                    raise RenderError(f"{name}: an email template must set `subject`")
                subject = " ".join(str(subject).split())
        return Rendered(parts=parts, subject=subject)
