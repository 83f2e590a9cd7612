"""What the fact check (comms/render/facts.py) costs next to the render it checks: per channel and
language, for the sample events of every campaign, on the fixture roster.

    .venv/bin/python bench/fact_check.py [--repeat 300]

A mass message is rendered and checked once per language, whatever the audience; a family's own
text (a personal template) is checked on the first family of each language, then only rendered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from comms.app import App, Env
from comms.channels import channel_class
from comms.checks import _sample_recipient, _samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    noon = dt.datetime(2020, 9, 2, 12, tzinfo=ZoneInfo("America/New_York"))
    with tempfile.TemporaryDirectory() as tmp:
        env = Env.from_environ(
            {
                "COMMS_VAR": f"{tmp}/var",
                "COMMS_OUT": f"{tmp}/out",
                "COMMS_CONFIG": str(root / "campaigns.yaml"),
                "COMMS_TEMPLATES": str(root / "templates"),
            }
        )
        app = App.open(env, clock=lambda: noon, environ={})
        p, s = app.pipeline, app.settings
        rows = []
        for cid, c in s.campaigns.items():
            event = _samples(s)[c.event_type][0]
            for channel, options in c.channels.items():
                spec = channel_class(channel)
                for lang in spec.languages(s.district, options):
                    rec = None if spec.audience == "press" else _sample_recipient(p, cid, event, lang)
                    ctx = p.context(cid, c, event, lang, rec)
                    render, check = [], []
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        r = p.renderer.render(channel, options.template, lang, ctx)
                        render.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        found = p.composer.check(spec, options, lang, event, ctx, r)
                        check.append(time.perf_counter() - t)
                    assert found == [], found
                    rows.append((cid, channel, lang, statistics.median(render), statistics.median(check)))
        app.close()
    print(f"{'campaign':20} {'channel':14} lang  render ms  check ms")
    for cid, channel, lang, r, k in rows:
        print(f"{cid:20} {channel:14} {lang:4} {r * 1e3:9.2f} {k * 1e3:9.2f}")
    total_r, total_k = sum(r for *_, r, _ in rows), sum(k for *_, k in rows)
    print(f"all {len(rows)} renderings: render {total_r * 1e3:.1f} ms, check {total_k * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
