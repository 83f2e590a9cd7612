"""Render campaign templates with Jinja2, safely: event values are data, never template code."""

from comms.render.renderer import Rendered, Renderer, template_paths

__all__ = ["Rendered", "Renderer", "template_paths"]
